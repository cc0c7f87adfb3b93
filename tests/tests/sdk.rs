//! The official MemOS Python SDK (`MemOSClient` from the PyPI package `memoryos`) against a real
//! server: the cloud shapes must work for it unchanged. The SDK and the modules it imports are
//! installed once into a virtual environment (pinned, `--no-deps`; see tests/sdk/).

use std::path::PathBuf;
use std::process::Command;

fn sdk_python() -> PathBuf {
    let venv = std::env::var_os("MEMOS_SDK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            home.join(".cache/memos/sdk-venv-memoryos-2.0.33")
        });
    let python = venv.join("bin/python");
    let done = venv.join(".installed");
    if !done.exists() {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3");
        assert!(st.success(), "creating the venv");
        let reqs = tests::root().join("tests/sdk/requirements.txt");
        let st = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "-r",
            ])
            .arg(&reqs)
            .status()
            .expect("pip");
        assert!(st.success(), "installing the MemOS SDK");
        std::fs::write(&done, "").unwrap();
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_memos_sdk_works_unchanged() {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.auth.keys = vec![server::auth::KeyConfig::full("sdk", "mpg-sdk-key")];
    // The SDK's chat talks to a scripted OpenAI-compatible server (real HTTP and SSE).
    let llm = tests::FakeLlm::start(std::sync::Arc::new(|_, _| {
        tests::FakeReply::Text("You like strawberries.".into())
    }))
    .await;
    cfg.llm.models = vec![llm.model("fake")];
    let s = tests::Server::start(cfg).await;
    let work = tempfile::tempdir().unwrap();
    let script = tests::root().join("tests/sdk/check.py");
    let base = format!("{}/api/openmem/v1", s.url);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .current_dir(work.path())
            .env("MEMOS_BASE_URL", base)
            .env("MEMOS_API_KEY", "mpg-sdk-key")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "ok add_message sync",
        "ok add_message async + get_task_status",
        "ok search_memory",
        "ok get_memory + get_memory_by_id",
        "ok knowledge base create + file + search",
        "ok knowledge base multipart file",
        "ok add_feedback",
        "ok delete_memory",
        "ok get_knowledgebase_file + delete_knowledgebase_file",
        "ok delete_knowledgebase",
        "ok chat",
        "ok chat stream",
        "SDK OK",
    ] {
        assert!(stdout.contains(step), "missing {step}: {stdout}");
    }
    // What the SDK did is in the store: its (async) feedback was processed by feedback-merge
    // (new information: added as a memory).
    for _ in 0..200 {
        if s.memos.tasks.active() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let txn = s.memos.store.read_txn().unwrap();
    let fb = s.memos.store.feedback(&txn, "sdk-user").unwrap();
    let f = fb
        .iter()
        .find(|f| f.feedback_content.contains("raspberries"))
        .expect("the SDK's feedback");
    assert_eq!(f.status, "processed");
    assert!(
        f.result.as_deref().unwrap_or("").contains("raspberries"),
        "{f:?}"
    );
    drop(txn);
    s.stop().await;
}
