SELEC id FROM memories;
----
error[400]: SQL error: ParserError("Expected: an SQL statement, found: SELEC at Line: 1, Column: 1")
