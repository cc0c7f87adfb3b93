-- Every version of the memories that changed, joined with their current row.
SELECT m.id, h.version, h.is_current, h.update_type, h.merged_from, h.status, h.memory FROM memories m JOIN memory_history h ON h.memory_id = m.id WHERE m.version > 1 ORDER BY m.id, h.version;
----
+----+---------+------------+-------------+-------------+-----------+-----------------------------------------------+
| id | version | is_current | update_type | merged_from | status    | memory                                        |
+----+---------+------------+-------------+-------------+-----------+-----------------------------------------------+
| a1 | 1       | false      | merge       | a7          | activated | Alice adopted a beagle named Max              |
| a1 | 2       | false      | feedback    |             | activated | Alice adopted a beagle puppy named Max        |
| a1 | 3       | true       |             |             | activated | Alice adopted a two-year-old beagle named Max |
| a6 | 1       | false      | update      |             | activated | Alice lives in Porto                          |
| a6 | 2       | true       |             |             | archived  | Alice moved from Porto to Lisbon              |
+----+---------+------------+-------------+-------------+-----------+-----------------------------------------------+
(5 rows)
