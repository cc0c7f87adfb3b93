-- Nearest neighbours across every cube the key may read.
SELECT rank, id, cube_id FROM vector_search('playing classical music', 2) ORDER BY rank;
----
+------+----+---------+
| rank | id | cube_id |
+------+----+---------+
| 1    | b1 | beta    |
| 2    | b2 | beta    |
+------+----+---------+
(2 rows)
