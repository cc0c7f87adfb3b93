//! Graceful shutdown: SIGTERM while clients are adding memories loses nothing that was
//! acknowledged, and the process exits within `shutdown_timeout_secs`.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, memos, model_dir, wait_listening, wait_ready};

#[test]
fn sigterm_during_ingest_loses_nothing_acknowledged_and_exits_in_time() {
    let model = model_dir();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let limit = 20;
    let mut child = memos()
        .arg("serve")
        .env("MEMOS_DATA_DIR", data.path())
        .env("MEMOS_MODEL_DIR", &model)
        .env("MEMOS_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("MEMOS_PG_ADDR", "")
        .env("MEMOS_METRICS_ADDR", "")
        .env("MEMOS_SHUTDOWN_TIMEOUT_SECS", limit.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_listening(port), "server did not start");
    assert!(wait_ready(port), "server did not become ready");

    // Four clients add memories one after another until the server goes away; the first
    // failure of each is kept (those before the SIGTERM explain a run that acknowledged little).
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let url = format!("http://127.0.0.1:{port}/product/add");
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (acked, failures, url) = (acked.clone(), failures.clone(), url.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap();
                let fail = |why: String| failures.lock().unwrap().push(format!("client {c}: {why}"));
                for i in 0..1000 {
                    let body = serde_json::json!({"user_id": "sd", "writable_cube_ids": ["shutdown"],
                        "async_mode": "sync", "messages": [{"role": "user",
                        "content": format!("client {c} note {i}: the tide was {} metres", i * 7 + c)}]});
                    let r = match client.post(&url).json(&body).send() {
                        Ok(r) => r,
                        Err(e) => {
                            fail(format!("add {i}: {e}"));
                            break;
                        }
                    };
                    if r.status().as_u16() != 200 {
                        fail(format!("add {i}: {} {}", r.status(), r.text().unwrap_or_default()));
                        break;
                    }
                    let v: serde_json::Value = r.json().unwrap();
                    for m in v["data"].as_array().unwrap() {
                        acked
                            .lock()
                            .unwrap()
                            .push(m["memory_id"].as_str().unwrap().to_string());
                    }
                }
            })
        })
        .collect();
    // Let ingest get going, then SIGTERM in the middle of it.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 20 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before_sigterm = failures.lock().unwrap().clone();
    let sent_at = Instant::now();
    assert!(
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent_at.elapsed() < Duration::from_secs(limit + 10),
            "memos did not exit within shutdown_timeout_secs"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = sent_at.elapsed();
    for c in clients {
        c.join().unwrap();
    }
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(limit), "exit took {took:?}");

    // Every memory the server acknowledged is in the store.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "only {} adds acknowledged in {:?} before the SIGTERM; failures: {before_sigterm:?}",
        acked.len(),
        sent_at - started
    );
    let store = store::Store::open(data.path(), store::StoreOptions::default()).unwrap();
    let txn = store.read_txn().unwrap();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| store.get(&txn, id).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged memories missing",
        missing.len(),
        acked.len()
    );
}

/// Open streams never hold a SIGTERM hostage: a client that opened a request and stalls in the
/// middle of its body (or any stream that never ends) is cut after `shutdown_timeout_secs`,
/// and the process exits cleanly.
#[test]
fn sigterm_with_a_stalled_stream_exits_within_the_timeout() {
    use std::io::Write;
    let model = model_dir();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let limit = 3;
    let mut child = memos()
        .arg("serve")
        .env("MEMOS_DATA_DIR", data.path())
        .env("MEMOS_MODEL_DIR", &model)
        .env("MEMOS_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("MEMOS_PG_ADDR", "")
        .env("MEMOS_METRICS_ADDR", "")
        .env("MEMOS_SHUTDOWN_TIMEOUT_SECS", limit.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_listening(port), "server did not start");
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stalled,
        "POST /product/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"query\": \"half a bo"
    )
    .unwrap();
    stalled.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent_at = Instant::now();
    assert!(
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent_at.elapsed() < Duration::from_secs(3 * limit + 10),
            "memos waited for the stalled stream"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        sent_at.elapsed() >= Duration::from_secs(limit) - Duration::from_millis(200),
        "the stalled request was cut before its grace period"
    );
    assert!(
        sent_at.elapsed() < Duration::from_secs(2 * limit + 5),
        "exit took {:?}",
        sent_at.elapsed()
    );
    drop(stalled);
}
