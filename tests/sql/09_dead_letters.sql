-- Dead letters keep the payload and the reason.
SELECT seq, source, position, reason, payload, payload_bytes FROM dead_letters;
----
+-----+--------+-----------------------+-------------------------------------------------+---------+---------------+
| seq | source | position              | reason                                          | payload | payload_bytes |
+-----+--------+-----------------------+-------------------------------------------------+---------+---------------+
| 0   | nats   | memos.events.alpha/12 | invalid JSON: expected value at line 1 column 1 | {oops   | 5             |
+-----+--------+-----------------------+-------------------------------------------------+---------+---------------+
(1 rows)
