//! Helpers shared by the tests that run the `memos` binary.
#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::Duration;

/// The `memos` binary under test.
pub fn memos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memos"))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The model directory, fetched (`memos model fetch`) when missing.
pub fn model_dir() -> std::path::PathBuf {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2");
    let st = memos()
        .env("MEMOS_MODEL_DIR", &dir)
        .args(["model", "fetch"])
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

/// Waits up to 30 s until something listens on `port`.
pub fn wait_listening(port: u16) -> bool {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Kills the child process when dropped (a failed test leaves nothing running).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 60 s until `GET /ready` answers 200 (the pipeline runs, every source is up).
pub fn wait_ready(port: u16) -> bool {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..600 {
        if client
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
