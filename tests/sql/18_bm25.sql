SELECT rank, id, round(bm25_score, 3) > 0 AS matched FROM bm25('Berlin marathon', 2, 'alpha') ORDER BY rank;
----
+------+----+---------+
| rank | id | matched |
+------+----+---------+
| 1    | a4 | true    |
| 2    | a5 | true    |
+------+----+---------+
(2 rows)
