-- A full-table aggregate.
SELECT status, memory_type, count(*) AS n, round(avg(confidence), 2) AS confidence FROM memories GROUP BY status, memory_type ORDER BY status, memory_type;
----
+-----------+----------------------+---+------------+
| status    | memory_type          | n | confidence |
+-----------+----------------------+---+------------+
| activated | LongTermMemory       | 4 | 0.99       |
| activated | PreferenceMemory     | 1 | 0.99       |
| activated | RawFileMemory        | 1 | 0.99       |
| activated | ToolTrajectoryMemory | 1 | 0.99       |
| activated | UserMemory           | 1 | 0.99       |
| activated | WorkingMemory        | 1 | 0.99       |
| archived  | LongTermMemory       | 1 | 0.99       |
+-----------+----------------------+---+------------+
(7 rows)
