-- Cubes and knowledge bases with their sizes.
SELECT cube_id, name, owner_id, kind, memories FROM cubes ORDER BY cube_id;
----
+---------+--------------+----------+---------------+----------+
| cube_id | name         | owner_id | kind          | memories |
+---------+--------------+----------+---------------+----------+
| alpha   | alpha        | alice    | cube          | 6        |
| beta    | beta         | carol    | cube          | 3        |
| gamma   | Support docs | kb       | knowledgebase | 1        |
+---------+--------------+----------+---------------+----------+
(3 rows)
