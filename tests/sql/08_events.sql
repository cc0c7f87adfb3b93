-- Processed events per cube and source, with their positions.
SELECT cube_id, source, count(*) AS events, count(position) AS with_position, min(processed_at) AS first FROM events GROUP BY cube_id, source ORDER BY cube_id, source;
----
+---------+--------+--------+---------------+----------------------+
| cube_id | source | events | with_position | first                |
+---------+--------+--------+---------------+----------------------+
| alpha   | http   | 6      | 0             | 2024-05-01T01:00:00Z |
| beta    | kafka  | 3      | 3             | 2024-05-01T07:00:00Z |
| gamma   | http   | 1      | 0             | 2024-05-01T10:00:00Z |
+---------+--------+--------+---------------+----------------------+
(3 rows)
