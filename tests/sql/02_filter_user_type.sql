-- Equality and IN on indexed fields are pushed into the scan.
SELECT id, memory_type, memory FROM memories WHERE user_id = 'bob' AND memory_type IN ('LongTermMemory', 'ToolTrajectoryMemory') ORDER BY id;
----
+----+----------------------+------------------------------------------------+
| id | memory_type          | memory                                         |
+----+----------------------+------------------------------------------------+
| a4 | LongTermMemory       | Bob is training for the Berlin marathon        |
| a5 | ToolTrajectoryMemory | weather_api returned rain for Berlin on Sunday |
+----+----------------------+------------------------------------------------+
(2 rows)
