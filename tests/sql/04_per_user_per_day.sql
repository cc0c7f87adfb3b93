-- Memories per user per day.
SELECT user_id, date_trunc('day', created_at) AS day, count(*) AS memories FROM memories GROUP BY user_id, day ORDER BY user_id, day;
----
+---------+----------------------+----------+
| user_id | day                  | memories |
+---------+----------------------+----------+
| alice   | 2024-05-01T00:00:00Z | 2        |
| alice   | 2024-05-02T00:00:00Z | 1        |
| alice   | 2024-05-03T00:00:00Z | 1        |
| bob     | 2024-05-02T00:00:00Z | 1        |
| bob     | 2024-05-03T00:00:00Z | 1        |
| carol   | 2024-05-01T00:00:00Z | 1        |
| carol   | 2024-05-02T00:00:00Z | 1        |
| dave    | 2024-05-03T00:00:00Z | 1        |
| kb      | 2024-05-01T00:00:00Z | 1        |
+---------+----------------------+----------+
(9 rows)
