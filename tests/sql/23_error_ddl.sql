CREATE TABLE notes (id TEXT);
----
error[403]: memos SQL is read-only: DDL (CreateMemoryTable) is not allowed (memories change through add, feedback and delete)
