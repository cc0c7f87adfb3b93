-- The REST hybrid search as a table.
SELECT bucket, rank, id, memory FROM search('what kind of dog does Alice have', 2, 'alpha') ORDER BY bucket, rank;
----
+----------+------+----+------------------------------------------------+
| bucket   | rank | id | memory                                         |
+----------+------+----+------------------------------------------------+
| pref_mem | 1    | a3 | Alice prefers window seats on flights          |
| text_mem | 1    | a2 | Alice is allergic to peanuts                   |
| text_mem | 2    | a1 | Alice adopted a two-year-old beagle named Max  |
| tool_mem | 1    | a5 | weather_api returned rain for Berlin on Sunday |
+----------+------+----+------------------------------------------------+
(4 rows)
