SELECT * FROM search('dogs', 0);
----
error[400]: Error during planning: search(): k must be 1..=200, got 0
