-- scope: beta
SELECT h.cube_id, count(*) AS versions FROM memory_history h JOIN cubes c ON c.cube_id = h.cube_id GROUP BY h.cube_id;
----
+---------+----------+
| cube_id | versions |
+---------+----------+
| beta    | 3        |
+---------+----------+
(1 rows)
