-- scope: alpha
-- A key limited to cube alpha sees only alpha, whatever the query asks for.
SELECT cube_id, count(*) AS n FROM memories GROUP BY cube_id;
----
+---------+---+
| cube_id | n |
+---------+---+
| alpha   | 6 |
+---------+---+
(1 rows)
