//! The memos binary's library half: the LoCoMo evaluation (`memos eval locomo`) and the
//! markdown report sections the benchmarks write. The CLI, configuration loading, process
//! wiring and shutdown are in `main.rs`.
#![warn(missing_docs)]

pub mod eval;
