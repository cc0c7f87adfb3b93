-- search() takes the MemOS filter JSON.
SELECT rank, id, user_id FROM search('Berlin', 5, 'alpha', '{"user_id": "bob"}') WHERE bucket = 'text_mem' ORDER BY rank;
----
+------+----+---------+
| rank | id | user_id |
+------+----+---------+
| 1    | a4 | bob     |
+------+----+---------+
(1 rows)
