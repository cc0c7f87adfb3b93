//! The `memos` binary end to end: `serve` (embedded defaults overridden by env), `add`,
//! `search`, `import`, `status`, `export` and `import-cube`.

mod common;

use std::process::{Command, Stdio};

use common::{Guard, free_port, memos, model_dir, wait_listening};

/// What the phases of the end-to-end test share: the running server's addresses, its data
/// directory and the model.
struct Ctx<'a> {
    url: &'a str,
    port: u16,
    pg_port: u16,
    metrics_port: u16,
    data: &'a tempfile::TempDir,
    model: &'a std::path::Path,
}

#[test]
fn serve_add_search_then_import_and_status() {
    let model = model_dir();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let pg_port = free_port();
    let metrics_port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Guard(
        memos()
            .arg("serve")
            .env("MEMOS_DATA_DIR", data.path())
            .env("MEMOS_MODEL_DIR", &model)
            .env("MEMOS_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("MEMOS_PG_ADDR", format!("127.0.0.1:{pg_port}"))
            .env("MEMOS_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_listening(port), "server did not start");
    let c = Ctx {
        url: &url,
        port,
        pg_port,
        metrics_port,
        data: &data,
        model: &model,
    };
    add_and_search_from_the_cli(&c);
    readme_examples(&c);
    let alice = sql_from_the_cli(&c);
    psql(&c, alice);
    metrics_on_their_port(&c);
    status_beside_the_server(&c);
    // SIGTERM: graceful shutdown.
    let _ = Command::new("kill").arg(server.0.id().to_string()).status();
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");

    offline_import_is_exactly_once(&c);
    cube_export_and_import(&c);
}

fn add_and_search_from_the_cli(c: &Ctx) {
    let url = c.url;
    let out = memos()
        .args([
            "add",
            "I adore climbing in Yosemite every spring.",
            "--user",
            "alice",
            "--url",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        added.contains("PreferenceMemory") && added.contains("UserMemory"),
        "{added}"
    );
    let out = memos()
        .args([
            "search",
            "Where does alice climb?",
            "--user",
            "alice",
            "--url",
            url,
            "--top-k",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let found = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(found.contains("Yosemite"), "{found}");
    let out = memos()
        .args([
            "search",
            "x",
            "--user",
            "alice",
            "--url",
            url,
            "--filter",
            "{\"memory_type\": {\"near\": 1}}",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown operator"));
}

fn readme_examples(c: &Ctx) {
    let port = c.port;
    // The README's API examples, verbatim but for the port.
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let block = readme
        .split("<!-- readme-test:begin -->")
        .nth(1)
        .and_then(|r| r.split("<!-- readme-test:end -->").next())
        .expect("README has a readme-test block");
    let joined = block.replace("\\\n", " ");
    let commands: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(commands.len(), 4, "{block}");
    let mut outputs = Vec::new();
    for c in &commands {
        let c = c.replace("localhost:8000", &format!("127.0.0.1:{port}"));
        let out = Command::new("sh").arg("-c").arg(&c).output().unwrap();
        assert!(out.status.success(), "{c}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{c}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert!(v["code"] == 200 || v["code"] == 0, "{c}: {v}");
        outputs.push(v);
    }
    assert!(
        outputs[0]["data"].to_string().contains("I like strawberry"),
        "{}",
        outputs[0]
    );
    let hits = outputs[1]["data"]["text_mem"][0]["memories"].to_string()
        + &outputs[1]["data"]["pref_mem"][0]["memories"].to_string();
    assert!(hits.contains("strawberry"), "{}", outputs[1]);
    assert!(
        outputs[2]["data"]["memory_detail_list"][0]["memory_value"]
            .as_str()
            .unwrap()
            .contains("strawberry"),
        "{}",
        outputs[2]
    );

    let rows = outputs[3]["data"]["rows"].to_string();
    assert!(rows.contains("\"user_id\":\"demo\""), "{}", outputs[3]);
}

/// `memos sql`; returns how many memories alice has.
fn sql_from_the_cli(c: &Ctx) -> i64 {
    let url = c.url;
    // `memos sql` prints a table; errors go to stderr with a failing status.
    let out = memos()
        .args([
            "sql",
            "SELECT user_id, count(*) AS memories FROM memories GROUP BY user_id ORDER BY user_id",
            "--url",
            url,
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("| alice "), "{table}");
    assert!(table.contains("rows)"), "{table}");
    let out = memos()
        .args([
            "sql",
            "SELECT count(*) AS n FROM memories WHERE user_id = 'alice'",
            "--json",
            "--url",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let alice = rows[0]["n"].as_i64().unwrap();
    assert!(alice >= 1, "{rows}");
    let out = memos()
        .args(["sql", "DROP TABLE memories", "--url", url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    alice
}

fn psql(c: &Ctx, alice: i64) {
    let pg_port = c.pg_port;
    // psql on the Postgres port (open mode: loopback, no password).
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &pg_port.to_string(),
            "-U",
            "memos",
            "-d",
            "memos",
            "-c",
            "SELECT count(*) FROM memories WHERE user_id = 'alice'",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        alice.to_string()
    );
}

fn metrics_on_their_port(c: &Ctx) {
    let metrics_port = c.metrics_port;
    // Prometheus metrics on their own port.
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let metrics = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        metrics.contains("memos_events_total{outcome=\"stored\",source=\"http\"}"),
        "{metrics}"
    );
}

fn status_beside_the_server(c: &Ctx) {
    let metrics_port = c.metrics_port;
    let data = c.data;
    // `memos status` next to a running server: store counts and what the server reports.
    let out = memos()
        .arg("status")
        .env("MEMOS_DATA_DIR", data.path())
        .env("MEMOS_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["server"]["reachable"], true, "{v}");
    assert_eq!(v["server"]["tasks_active"], 0, "{v}");
    assert!(
        v["server"]["events"]["http/stored"].as_i64().unwrap() >= 2,
        "{v}"
    );
    assert!(v["memories"].as_u64().unwrap() >= 2, "{v}");
}

fn offline_import_is_exactly_once(c: &Ctx) {
    let metrics_port = c.metrics_port;
    let data = c.data;
    let model = c.model;
    // Offline import of a JSONL file (one bad line is dead-lettered, the rest stored).
    let file = data.path().join("events.jsonl");
    let mut lines = Vec::new();
    for i in 0..5 {
        lines.push(serde_json::json!({"event_id": format!("imp-{i}"), "kind": "messages", "cube_id": "bob", "user_id": "bob",
            "payload": {"messages": [{"role": "user", "content": format!("Imported fact number {i}")}]}}).to_string());
    }
    lines.push("{\"kind\": \"nope\"}".into());
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = memos()
        .arg("import")
        .arg(&file)
        .env("MEMOS_DATA_DIR", data.path())
        .env("MEMOS_MODEL_DIR", model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("5 stored, 0 already present, 1 dead-lettered"),
        "{text}"
    );
    // Importing again changes nothing.
    let out = memos()
        .arg("import")
        .arg(&file)
        .env("MEMOS_DATA_DIR", data.path())
        .env("MEMOS_MODEL_DIR", model)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("0 stored, 5 already present, 1 dead-lettered")
    );
    let out = memos()
        .arg("status")
        .env("MEMOS_DATA_DIR", data.path())
        .env("MEMOS_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["server"]["reachable"], false,
        "the server is stopped: {v}"
    );
    assert_eq!(v["cubes"], 3, "alice, demo (README examples), bob");
    assert_eq!(v["dead_letters"], 2);
    assert!(v["memories"].as_u64().unwrap() >= 7);
}

fn cube_export_and_import(c: &Ctx) {
    let data = c.data;
    // MemCube export of bob's cube, then import into a fresh data directory.
    let snap = data.path().join("bob-cube");
    let out = memos()
        .args(["export", "--cube", "bob"])
        .arg(&snap)
        .env("MEMOS_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["format"], "memos-cube");
    assert_eq!(manifest["counts"]["memories"], 5);
    let other = tempfile::tempdir().unwrap();
    let import = || {
        memos()
            .arg("import-cube")
            .arg(&snap)
            .env("MEMOS_DATA_DIR", other.path())
            .output()
            .unwrap()
    };
    let out = import();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["memories"], 5);
    let again = import();
    assert!(!again.status.success(), "the cube exists now");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
