SELECT id FROM memories ORDER BY id LIMIT 3;
----
+----+
| id |
+----+
| a1 |
| a2 |
| a3 |
+----+
(3 rows)
