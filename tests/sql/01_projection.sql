-- Every field of the record is a column; a cube filter is answered from the cube's bitmap.
SELECT id, memory, user_id, session_id, memory_type, status, version FROM memories WHERE cube_id = 'alpha' ORDER BY id;
----
+----+------------------------------------------------+---------+------------+----------------------+-----------+---------+
| id | memory                                         | user_id | session_id | memory_type          | status    | version |
+----+------------------------------------------------+---------+------------+----------------------+-----------+---------+
| a1 | Alice adopted a two-year-old beagle named Max  | alice   | s1         | LongTermMemory       | activated | 3       |
| a2 | Alice is allergic to peanuts                   | alice   | s1         | UserMemory           | activated | 1       |
| a3 | Alice prefers window seats on flights          | alice   | s2         | PreferenceMemory     | activated | 1       |
| a4 | Bob is training for the Berlin marathon        | bob     | s3         | LongTermMemory       | activated | 1       |
| a5 | weather_api returned rain for Berlin on Sunday | bob     | s3         | ToolTrajectoryMemory | activated | 1       |
| a6 | Alice moved from Porto to Lisbon               | alice   | s2         | LongTermMemory       | archived  | 2       |
+----+------------------------------------------------+---------+------------+----------------------+-----------+---------+
(6 rows)
