-- scope: alpha
-- Dead letters are store-wide: a scoped key sees none.
SELECT count(*) AS n FROM dead_letters;
----
+---+
| n |
+---+
| 0 |
+---+
(1 rows)
