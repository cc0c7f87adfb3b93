SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name;
----
+----------------+
| table_name     |
+----------------+
| cubes          |
| dead_letters   |
| events         |
| memories       |
| memory_history |
+----------------+
(5 rows)
