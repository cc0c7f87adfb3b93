-- scope: alpha
SELECT count(*) AS n FROM memories WHERE cube_id IN ('beta', 'gamma');
----
+---+
| n |
+---+
| 0 |
+---+
(1 rows)
