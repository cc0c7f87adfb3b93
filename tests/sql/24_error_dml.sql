DELETE FROM memories WHERE cube_id = 'alpha';
----
error[403]: memos SQL is read-only: DELETE on table memories is not allowed (memories change through add, feedback and delete)
