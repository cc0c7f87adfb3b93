//! memos SQL: DataFusion tables over the LMDB store (`memories`, `memory_history`, `events`,
//! `dead_letters`, `cubes`), search table functions and the Postgres wire protocol. Empty until
//! the SQL issue; kept in the workspace so the layout is stable.
#![warn(missing_docs)]
