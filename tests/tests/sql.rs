//! SQL over memory: golden files (`tests/sql/*.sql`, each a statement and its expected
//! output), `search()` against REST search, `POST /sql` (JSON and Arrow IPC), `psql`, a
//! tokio-postgres client with a tenant key, and the errors and limits.
//!
//! Golden files: an optional `-- scope: CUBE[+CUBE]` line runs the case with a key limited to
//! those cubes; the statement ends at a `----` line; what follows is the expected table (or
//! `error[<http status>]: <message>`). `MEMOS_BLESS=1 cargo test -p tests --test sql` rewrites
//! the expectations from the actual output (review the diff).

use std::sync::Arc;

use serde_json::json;
use server::ServerError;
use server::auth::Principal;
use store::{CubeInfo, DeadLetter, EventRecord, MemoryRecord, MemoryType, Status, Store};
use tests::Server;

const T0: i64 = 1_714_521_600_000_000; // 2024-05-01T00:00:00Z
const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

#[allow(clippy::too_many_arguments)]
fn rec(
    id: &str,
    cube: &str,
    user: &str,
    session: &str,
    ty: MemoryType,
    text: &str,
    at: i64,
) -> MemoryRecord {
    MemoryRecord {
        id: id.into(),
        memory: text.into(),
        cube_id: cube.into(),
        user_id: user.into(),
        session_id: session.into(),
        agent_id: None,
        app_id: None,
        memory_type: ty,
        status: Status::Activated,
        key: None,
        tags: vec!["mode:fast".into()],
        info: serde_json::Map::new(),
        source: Some("conversation".into()),
        sources: vec![],
        confidence: 0.99,
        created_at: at,
        updated_at: at,
        event_time: Some(at),
        version: 1,
        history: vec![],
        event_id: format!("ev-{id}"),
        file_ids: vec![],
        embedding: vec![],
    }
}

/// Three cubes (one a knowledge base), four users over three days, a memory with two earlier
/// versions, an archived memory, events from two sources and a dead letter.
/// The fixture's records: two tenants, several users, sessions, types and times.
fn fixture_records() -> Vec<MemoryRecord> {
    use MemoryType::*;
    let mut recs = vec![
        rec(
            "a1",
            "alpha",
            "alice",
            "s1",
            LongTermMemory,
            "Alice adopted a beagle named Max",
            T0 + HOUR,
        ),
        rec(
            "a2",
            "alpha",
            "alice",
            "s1",
            UserMemory,
            "Alice is allergic to peanuts",
            T0 + 2 * HOUR,
        ),
        rec(
            "a3",
            "alpha",
            "alice",
            "s2",
            PreferenceMemory,
            "Alice prefers window seats on flights",
            T0 + DAY + 3 * HOUR,
        ),
        rec(
            "a4",
            "alpha",
            "bob",
            "s3",
            LongTermMemory,
            "Bob is training for the Berlin marathon",
            T0 + DAY + 4 * HOUR,
        ),
        rec(
            "a5",
            "alpha",
            "bob",
            "s3",
            ToolTrajectoryMemory,
            "weather_api returned rain for Berlin on Sunday",
            T0 + 2 * DAY + 5 * HOUR,
        ),
        rec(
            "a6",
            "alpha",
            "alice",
            "s2",
            LongTermMemory,
            "Alice lives in Porto",
            T0 + 2 * DAY + 6 * HOUR,
        ),
        rec(
            "b1",
            "beta",
            "carol",
            "s4",
            LongTermMemory,
            "Carol plays the cello in a string quartet",
            T0 + 7 * HOUR,
        ),
        rec(
            "b2",
            "beta",
            "carol",
            "s4",
            LongTermMemory,
            "Carol's favourite food is ramen",
            T0 + DAY + 8 * HOUR,
        ),
        rec(
            "b3",
            "beta",
            "dave",
            "s5",
            WorkingMemory,
            "Dave is debugging a Kafka consumer",
            T0 + 2 * DAY + 9 * HOUR,
        ),
        rec(
            "g1",
            "gamma",
            "kb",
            "docs",
            RawFileMemory,
            "Refunds are accepted within 30 days of purchase",
            T0 + 10 * HOUR,
        ),
    ];
    recs[1]
        .info
        .insert("source_app".into(), json!("health-diary"));
    recs[4].tags.push("tool:weather_api".into());
    recs[9].file_ids = vec!["refund-policy.md".into()];
    recs[9].source = Some("file".into());
    recs
}

fn fixture(store: &Store) {
    let recs = fixture_records();
    let later = [
        "Alice adopted a beagle puppy named Max",
        "Alice adopted a two-year-old beagle named Max",
        "Alice moved from Porto to Lisbon",
    ];
    let mut texts: Vec<String> = recs.iter().map(|r| r.memory.clone()).collect();
    texts.extend(later.iter().map(|s| s.to_string()));
    let vecs = tests::embedder().embed(&texts).expect("embed");
    let mut w = store.write_txn().expect("txn");
    store
        .put_cube(
            &mut w,
            &CubeInfo {
                cube_id: "gamma".into(),
                name: "Support docs".into(),
                owner_id: "kb".into(),
                created_at: T0,
                kind: "knowledgebase".into(),
                description: "refund and shipping policies".into(),
            },
        )
        .expect("cube");
    for (r, v) in recs.iter().zip(&vecs) {
        store.insert(&mut w, r, v).expect("insert");
        let source = if r.cube_id == "beta" { "kafka" } else { "http" };
        let position = (source == "kafka").then(|| format!("memos.events/0/{}", r.id));
        store
            .mark_event(
                &mut w,
                &r.cube_id,
                &r.event_id,
                &EventRecord {
                    memory_ids: vec![r.id.clone()],
                    processed_at: r.created_at,
                    source: source.into(),
                    position,
                },
            )
            .expect("event");
    }
    let mut a1 = store.get(&w, "a1").expect("get").expect("a1");
    a1.memory = later[0].into();
    store
        .update(&mut w, &a1, Some(&vecs[10]), "merge", Some("a7".into()))
        .expect("v2");
    let mut a1 = store.get(&w, "a1").expect("get").expect("a1");
    a1.memory = later[1].into();
    store
        .update(&mut w, &a1, Some(&vecs[11]), "feedback", None)
        .expect("v3");
    let mut a6 = store.get(&w, "a6").expect("get").expect("a6");
    a6.memory = later[2].into();
    a6.status = Status::Archived;
    store
        .update(&mut w, &a6, Some(&vecs[12]), "update", None)
        .expect("a6 v2");
    store
        .put_dead_letter(
            &mut w,
            &DeadLetter {
                source: "nats".into(),
                position: Some("memos.events.alpha/12".into()),
                reason: "invalid JSON: expected value at line 1 column 1".into(),
                payload: b"{oops".to_vec(),
                at: T0 + 11 * HOUR,
            },
        )
        .expect("dead letter");
    store.finish(&mut w, true).expect("index");
    w.commit().expect("commit");
}

fn principal(cubes: Option<&str>) -> Principal {
    Principal {
        id: "k".into(),
        name: "test-key".into(),
        cubes: cubes
            .map(|c| c.split('+').map(String::from).collect())
            .unwrap_or_else(|| vec!["*".into()]),
        users: vec!["*".into()],
        read: true,
        write: true,
        admin: false,
        rate_limit_per_minute: 0,
    }
}

async fn fixture_server(cfg_edit: impl FnOnce(&mut server::Config)) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = tests::config(dir.path());
    cfg_edit(&mut cfg);
    let store = Arc::new(Store::open(&cfg.data_dir, cfg.store_options()).expect("open"));
    fixture(&store);
    (Server::start_with_store(cfg, store).await, dir)
}

/// Runs `sql` as a key scoped to `cubes` (all cubes when None) and renders the result.
async fn render(server: &Server, cubes: Option<&str>, statement: &str) -> String {
    let session = server::sqlapi::session(&server.memos, &principal(cubes)).expect("session");
    match server.memos.sql.query(statement, &session).await {
        Ok(out) => {
            let batches = if out.batches.is_empty() {
                vec![
                    sql::datafusion::arrow::record_batch::RecordBatch::new_empty(
                        out.schema.clone(),
                    ),
                ]
            } else {
                out.batches
            };
            let table = sql::format::pretty(&batches).expect("pretty");
            format!("{table}\n({} rows)", out.rows)
        }
        Err(e) => {
            let e = ServerError::from(e);
            format!("error[{}]: {e}", e.status())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files() {
    let (server, _dir) = fixture_server(|_| {}).await;
    let dir = tests::root().join("tests/sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/sql")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "golden cases missing in {}",
        dir.display()
    );
    let bless = std::env::var_os("MEMOS_BLESS").is_some();
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let (head, expected) = text
            .split_once("\n----\n")
            .unwrap_or_else(|| panic!("{}: no ---- line", f.display()));
        let scope = head
            .lines()
            .find_map(|l| l.strip_prefix("-- scope:"))
            .map(str::trim);
        let statement: String = head
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let actual = render(&server, scope, statement.trim()).await;
        if actual.trim_end() != expected.trim_end() {
            if bless {
                std::fs::write(f, format!("{head}\n----\n{}\n", actual.trim_end())).expect("bless");
            } else {
                failures.push(format!(
                    "{}:\n--- expected\n{}\n--- actual\n{}",
                    f.display(),
                    expected.trim_end(),
                    actual.trim_end()
                ));
            }
        }
    }
    server.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `EXPLAIN ANALYZE` of a single-cube query: the scan decodes only that cube's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_cube_query_does_not_scan_other_cubes() {
    let (server, _dir) = fixture_server(|_| {}).await;
    let plan = |sql: &'static str| {
        let s = &server;
        async move {
            let session = server::sqlapi::session(&s.memos, &principal(None)).expect("session");
            let out = s.memos.sql.query(sql, &session).await.expect("explain");
            let text = sql::format::pretty(&out.batches).expect("pretty");
            let scanned: u64 = text
                .split("rows_scanned=")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no rows_scanned in {text}"));
            (scanned, text)
        }
    };
    let (beta, text) = plan("EXPLAIN ANALYZE SELECT id FROM memories WHERE cube_id = 'beta'").await;
    assert_eq!(beta, 3, "beta has 3 memories: {text}");
    assert!(text.contains("cubes_scanned=1"), "{text}");
    let (carol, text) = plan(
        "EXPLAIN ANALYZE SELECT id FROM memories WHERE cube_id = 'beta' AND user_id = 'carol'",
    )
    .await;
    assert_eq!(carol, 2, "{text}");
    let (all, text) = plan("EXPLAIN ANALYZE SELECT id FROM memories").await;
    assert_eq!(all, 10, "{text}");
    let (one, text) = plan("EXPLAIN ANALYZE SELECT id FROM memories WHERE id = 'b2'").await;
    assert_eq!(one, 1, "{text}");
    let (limited, text) = plan("EXPLAIN ANALYZE SELECT id FROM memories LIMIT 2").await;
    assert!(limited <= 2, "LIMIT stops the scan: {text}");
    server.stop().await;
}

async fn add(server: &Server, cube: &str, user: &str, text: &str) {
    let (status, v) = server
        .post(
            "/product/add",
            json!({"user_id": user, "writable_cube_ids": [cube], "async_mode": "sync",
                   "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

/// `search()` returns what `/product/search` returns, in the same order, with the same scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_function_matches_rest_search() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(tests::config(dir.path())).await;
    for t in [
        "I adopted a beagle named Max last spring",
        "My sister lives in Lisbon and works as an architect",
        "I am training for the Berlin marathon in September",
        "Max the beagle loves chasing tennis balls",
        "I switched from coffee to green tea",
        "My favourite dish is ramen with extra egg",
        "The beagle needs his vaccination next week",
    ] {
        add(&server, "pets", "ana", t).await;
    }
    for (q, k) in [
        ("what dog do I have", 3),
        ("running race", 2),
        ("what do I drink", 4),
    ] {
        let (status, rest) = server
            .post(
                "/product/search",
                json!({"query": q, "user_id": "ana", "readable_cube_ids": ["pets"], "top_k": k}),
            )
            .await;
        assert_eq!(status, 200, "{rest}");
        let rest_hits: Vec<(String, f64)> = rest["data"]["text_mem"][0]["memories"]
            .as_array()
            .expect("memories")
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().expect("id").to_string(),
                    m["metadata"]["relativity"].as_f64().expect("relativity"),
                )
            })
            .collect();
        assert!(!rest_hits.is_empty());
        let (status, v) = server
            .post(
                "/sql",
                json!({"sql": format!("SELECT id, score FROM search('{q}', {k}, 'pets') WHERE bucket = 'text_mem' ORDER BY rank")}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let sql_hits: Vec<(String, f64)> = v["data"]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().expect("id").to_string(),
                    r["score"].as_f64().expect("score"),
                )
            })
            .collect();
        let ids = |h: &[(String, f64)]| h.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&sql_hits), ids(&rest_hits), "query {q}");
        for (a, b) in sql_hits.iter().zip(&rest_hits) {
            assert!(
                (a.1 - b.1).abs() < 1e-3,
                "score of {}: sql {} rest {}",
                a.0,
                a.1,
                b.1
            );
        }
    }
    server.stop().await;
}

/// `POST /sql`: JSON rows with column types, Arrow IPC on request, and `$n` parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sql_json_arrow_and_params() {
    let (server, _dir) = fixture_server(|_| {}).await;
    let (status, v) = server
        .post(
            "/sql",
            json!({"sql": "SELECT id, tags, created_at, embedding FROM memories WHERE user_id = $1 ORDER BY id", "params": ["bob"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let rows = v["data"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "a4");
    assert_eq!(rows[1]["tags"], json!(["mode:fast", "tool:weather_api"]));
    assert_eq!(rows[0]["embedding"].as_array().expect("vector").len(), 384);
    assert!(
        rows[0]["created_at"]
            .as_str()
            .expect("time")
            .starts_with("2024-05-02T04:00:00"),
        "{}",
        rows[0]["created_at"]
    );
    assert_eq!(
        v["data"]["columns"][0],
        json!({"name": "id", "type": "Utf8"})
    );
    assert_eq!(v["data"]["row_count"], 2);

    let r = reqwest::Client::new()
        .post(format!("{}/sql", server.url))
        .header("accept", sql::format::ARROW_STREAM)
        .json(&json!({"sql": "SELECT cube_id, count(*) AS n FROM memories GROUP BY cube_id ORDER BY cube_id"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("ct"),
        sql::format::ARROW_STREAM
    );
    let bytes = r.bytes().await.expect("body");
    let reader = sql::datafusion::arrow::ipc::reader::StreamReader::try_new(
        std::io::Cursor::new(bytes.to_vec()),
        None,
    )
    .expect("ipc");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    let table = sql::format::pretty(&batches).expect("pretty");
    assert!(table.contains("| alpha   | 6 |"), "{table}");
    assert!(table.contains("| gamma   | 1 |"), "{table}");

    let (status, v) = server
        .post("/sql", json!({"sql": "SELECT 1", "params": [{"a": 1}]}))
        .await;
    assert_eq!(status, 400, "{v}");
    server.stop().await;
}

/// Bad SQL, DDL/DML, a timeout, a memory-limit breach and the row limit are each a clear
/// error, and the server keeps serving after every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_limits_keep_the_server_serving() {
    let (server, _dir) = fixture_server(|c| {
        c.sql.timeout_ms = 300;
        c.sql.memory_limit_bytes = 256 << 10;
        c.sql.max_rows = 50;
    })
    .await;
    let cases: [(&str, u16, &str); 10] = [
        ("SELEC id FROM memories", 400, "Expected"),
        ("SELECT nope FROM memories", 400, "nope"),
        ("SELECT * FROM no_such_table", 400, "no_such_table"),
        ("CREATE TABLE t (a INT)", 403, "read-only"),
        ("DROP TABLE memories", 403, "read-only"),
        ("INSERT INTO memories (id) VALUES ('x')", 403, "read-only"),
        (
            "DELETE FROM memories WHERE cube_id = 'alpha'",
            403,
            "read-only",
        ),
        // 10^5 rows of a cross join, sorted: over 256 KiB of sort buffers.
        (
            "SELECT a.memory || b.memory || c.memory || d.memory || e.memory AS s FROM memories a, memories b, memories c, memories d, memories e ORDER BY s",
            413,
            "memory limit",
        ),
        (
            "SELECT count(*) FROM memories a, memories b, memories c, memories d, memories e, memories f, memories g, memories h",
            504,
            "longer than 300 ms",
        ),
        (
            "SELECT a.id FROM memories a, memories b",
            413,
            "more than 50 rows",
        ),
    ];
    for (statement, status, needle) in cases {
        let (s, v) = server.post("/sql", json!({"sql": statement})).await;
        let msg = v["message"].as_str().unwrap_or("");
        assert_eq!(s, status, "{statement}: {v}");
        assert!(msg.contains(needle), "{statement}: {msg}");
        let (s, v) = server
            .post("/sql", json!({"sql": "SELECT count(*) AS n FROM memories"}))
            .await;
        assert_eq!(s, 200, "after {statement}: {v}");
        assert_eq!(v["data"]["rows"][0]["n"], 10);
    }
    let (s, _) = server.get("/health").await;
    assert_eq!(s, 200);
    server.stop().await;
}

fn psql(addr: std::net::SocketAddr, password: Option<&str>, sql: &str) -> (bool, String) {
    let mut cmd = std::process::Command::new("psql");
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "-U",
        "memos",
        "-d",
        "memos",
        "-c",
        sql,
    ]);
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.env_remove("PGPASSWORD"),
    };
    let out = cmd
        .output()
        .expect("psql (Debian postgresql-client) is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `psql` connects (password = API key), queries, gets clear errors, and a key only sees its
/// cubes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_and_queries() {
    let (mut server, _dir) = fixture_server(|c| {
        c.api_keys = "admin-key,alpha-key:alpha".into();
    })
    .await;
    let addr = server.start_pg().await;
    let run = move |pw: Option<&'static str>, sql: &'static str| {
        tokio::task::spawn_blocking(move || psql(addr, pw, sql))
    };
    let (ok, out) = run(
        Some("admin-key"),
        "SELECT cube_id, count(*) FROM memories GROUP BY cube_id ORDER BY cube_id",
    )
    .await
    .expect("join");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "alpha|6\nbeta|3\ngamma|1");
    let (ok, out) = run(Some("alpha-key"), "SELECT DISTINCT cube_id FROM memories")
        .await
        .expect("join");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "alpha");
    let (ok, out) = run(Some("wrong-key"), "SELECT 1").await.expect("join");
    assert!(!ok);
    assert!(out.contains("password authentication failed"), "{out}");
    let (ok, out) = run(Some("admin-key"), "DROP TABLE memories")
        .await
        .expect("join");
    assert!(!ok);
    assert!(out.contains("read-only"), "{out}");
    let (ok, out) = run(
        Some("admin-key"),
        "SELECT id, tags, created_at FROM memories WHERE id = 'a5'",
    )
    .await
    .expect("join");
    assert!(ok, "{out}");
    assert!(
        out.trim()
            .starts_with("a5|{mode:fast,tool:weather_api}|2024-05-03 05:00:00"),
        "{out}"
    );
    server.stop().await;
}

/// A tokio-postgres client with a tenant key cannot see another tenant's rows, through the
/// tables or through `search()`; prepared statements with parameters work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_tenant_isolation() {
    let (mut server, _dir) = fixture_server(|c| {
        c.api_keys = "alpha-key:alpha,beta-key:beta".into();
    })
    .await;
    let addr = server.start_pg().await;
    let connect = |key: &str| {
        format!(
            "host=127.0.0.1 port={} user=memos dbname=memos password={key}",
            addr.port()
        )
    };
    let (client, conn) = tokio_postgres::connect(&connect("alpha-key"), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);

    let rows = client
        .query("SELECT DISTINCT cube_id FROM memories", &[])
        .await
        .expect("query");
    let cubes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(cubes, vec!["alpha".to_string()]);

    // Asking for another tenant's cube by name finds nothing.
    let rows = client
        .query("SELECT count(*) FROM memories WHERE cube_id = 'beta'", &[])
        .await
        .expect("query");
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let rows = client
        .query("SELECT cube_id FROM cubes", &[])
        .await
        .expect("cubes");
    assert_eq!(rows.len(), 1);
    let rows = client
        .query("SELECT count(*) FROM dead_letters", &[])
        .await
        .expect("dead letters");
    assert_eq!(rows[0].get::<_, i64>(0), 0, "dead letters are store-wide");
    let rows = client
        .query(
            "SELECT count(*) FROM memory_history WHERE cube_id <> 'alpha'",
            &[],
        )
        .await
        .expect("history");
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let rows = client
        .query("SELECT count(*) FROM events WHERE cube_id <> 'alpha'", &[])
        .await
        .expect("events");
    assert_eq!(rows[0].get::<_, i64>(0), 0);

    // search() without a cube searches only the key's cubes; naming another cube is refused.
    let rows = client
        .query(
            "SELECT DISTINCT cube_id FROM search('cello quartet', 10)",
            &[],
        )
        .await
        .expect("search");
    let cubes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(cubes, vec!["alpha".to_string()]);
    let rows = client
        .query(
            "SELECT DISTINCT cube_id FROM vector_search('cello quartet', 10)",
            &[],
        )
        .await
        .expect("vector_search");
    assert!(rows.iter().all(|r| r.get::<_, String>(0) == "alpha"));
    let err = client
        .query("SELECT * FROM search('cello', 5, 'beta')", &[])
        .await
        .expect_err("other tenant's cube");
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "42501");
    assert!(db.message().contains("beta"), "{}", db.message());

    // Prepared statement with parameters (extended protocol, binary results).
    let stmt = client
        .prepare("SELECT id, version, created_at FROM memories WHERE user_id = $1 AND version >= $2 ORDER BY id")
        .await
        .expect("prepare");
    let rows = client
        .query(&stmt, &[&"alice", &2i64])
        .await
        .expect("bound query");
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![("a1".to_string(), 3), ("a6".to_string(), 2)]);
    let t: std::time::SystemTime = rows[0].get(2);
    assert_eq!(
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("epoch")
            .as_micros() as i64,
        T0 + HOUR
    );

    errors_and_the_other_tenant(server, addr, client, conn).await;
}

async fn errors_and_the_other_tenant(
    server: tests::Server,
    addr: std::net::SocketAddr,
    client: tokio_postgres::Client,
    conn: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let connect = |key: &str| {
        format!(
            "host=127.0.0.1 port={} user=memos dbname=memos password={key}",
            addr.port()
        )
    };
    // An error leaves the connection usable.
    let err = client.simple_query("SELEC 1").await.expect_err("bad sql");
    assert_eq!(err.as_db_error().expect("db").code().code(), "42601");
    let rows = client
        .query("SELECT count(*) FROM memories", &[])
        .await
        .expect("still serving");
    assert_eq!(rows[0].get::<_, i64>(0), 6);
    drop(client);
    let _ = conn.await;

    // The other tenant sees only its own.
    let (client, conn) = tokio_postgres::connect(&connect("beta-key"), tokio_postgres::NoTls)
        .await
        .expect("connect beta");
    let conn = tokio::spawn(conn);
    let rows = client
        .query("SELECT id FROM memories ORDER BY id", &[])
        .await
        .expect("beta rows");
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec!["b1", "b2", "b3"]);
    drop(client);
    let _ = conn.await;

    let bad = tokio_postgres::connect(&connect("nope"), tokio_postgres::NoTls).await;
    assert!(bad.is_err(), "unknown key is refused");
    server.stop().await;
}
