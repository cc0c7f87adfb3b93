INSERT INTO memories (id) VALUES ('x');
----
error[403]: memos SQL is read-only: INSERT INTO on table memories is not allowed (memories change through add, feedback and delete)
