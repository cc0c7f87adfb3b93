-- cosine() of a stored embedding and embed() of the same text is 1.
SELECT id, round(cosine(embedding, embed('Carol plays the cello in a string quartet')), 3) AS same, cosine(embedding, embed('Carol plays the cello in a string quartet')) > cosine(embedding, embed('tax law')) AS closer FROM memories WHERE id = 'b1';
----
+----+------+--------+
| id | same | closer |
+----+------+--------+
| b1 | 1.0  | true   |
+----+------+--------+
(1 rows)
