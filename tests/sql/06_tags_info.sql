-- Tags are a list, info is JSON text.
SELECT id, tags, info, file_ids FROM memories WHERE array_has(tags, 'tool:weather_api') OR info <> '{}' OR cardinality(file_ids) > 0 ORDER BY id;
----
+----+-------------------------------+-------------------------------+--------------------+
| id | tags                          | info                          | file_ids           |
+----+-------------------------------+-------------------------------+--------------------+
| a2 | [mode:fast]                   | {"source_app":"health-diary"} | []                 |
| a5 | [mode:fast, tool:weather_api] | {}                            | []                 |
| g1 | [mode:fast]                   | {}                            | [refund-policy.md] |
+----+-------------------------------+-------------------------------+--------------------+
(3 rows)
