-- Time ranges compare timestamps (UTC, microseconds).
SELECT id, created_at FROM memories WHERE created_at >= '2024-05-02T00:00:00Z' AND created_at < '2024-05-03T00:00:00Z' ORDER BY created_at;
----
+----+----------------------+
| id | created_at           |
+----+----------------------+
| a3 | 2024-05-02T03:00:00Z |
| a4 | 2024-05-02T04:00:00Z |
| b2 | 2024-05-02T08:00:00Z |
+----+----------------------+
(3 rows)
