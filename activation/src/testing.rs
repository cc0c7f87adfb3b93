//! Visible skips for tests that need hardware or a library this machine may lack.
//!
//! A test that cannot run calls [`skip_unless`]; it prints `SKIPPED <test>: <why>`, appends the
//! same line to the file named by `MEMOS_SKIPPED` (`./dev test` prints that file as the run's
//! last lines), and panics instead when the variable named by `require` is set, so CI and the
//! GPU machine cannot pass by skipping.

use std::io::Write;

/// Whether `test` may run: `available`, or else a recorded skip (or a panic when the
/// environment variable `require` is set).
pub fn skip_unless(available: bool, test: &str, why: &str, require: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var_os(require).is_none(),
        "{require} is set but {test} cannot run: {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
    if let Some(path) = std::env::var_os("MEMOS_SKIPPED")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{test}: {why} (set {require}=1 to fail instead)");
    }
    false
}
