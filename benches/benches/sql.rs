//! SQL: a single-cube filtered query, a full-table aggregate and `search()` at 100k memories in
//! 1,000 cubes, `search()` against the same search over REST, and the scan's own count of the
//! records it decoded (from `EXPLAIN ANALYZE`). Writes the `sql` section of BENCHMARKS.md.
//!
//! `cargo bench --profile dev -p benches --bench sql`; `MEMOS_BENCH_SQL_SIZE` (default 100000),
//! `MEMOS_BENCH_SQL_CUBES` (default 1000) and `MEMOS_BENCH_QUERIES` (default 200) adjust the run.

use std::sync::Arc;
use std::time::Instant;

use operators::embed::{Embedder, HashEmbedder};
use serde_json::{Value, json};
use server::auth::Principal;

use tests::bench::env;

const T0: i64 = 1_714_521_600_000_000;
const HOUR: i64 = 3_600_000_000;

/// A count from `EXPLAIN ANALYZE` (`name=42` or `name=1.50 K`).
fn metric(text: &str, name: &str) -> u64 {
    let v = text
        .split(&format!("{name}="))
        .nth(1)
        .and_then(|r| r.split([',', ']']).next())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim();
    let (num, mult) = match v.split_once(' ') {
        Some((n, "K")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        Some((n, "B")) => (n, 1e9),
        _ => (v, 1.0),
    };
    (num.parse::<f64>().unwrap_or_else(|_| panic!("{name}={v}")) * mult).round() as u64
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    (
        tests::bench::pct(&mut v, 0.5),
        tests::bench::pct(&mut v, 0.99),
    )
}

const WORDS: [&str; 16] = [
    "beagle", "marathon", "Lisbon", "ramen", "cello", "Kafka", "peanuts", "flight", "garden",
    "chess", "sister", "piano", "coffee", "Berlin", "camping", "novel",
];

/// Fills `size` memories over `cubes` cubes (10 users each, 30 days) with hashed vectors, in one
/// transaction. Returns the seconds it took.
fn fill(store: &store::Store, size: usize, cubes: usize) -> f64 {
    let hash = HashEmbedder::new(384);
    let t = Instant::now();
    let mut wtxn = store.write_txn().unwrap();
    for chunk in (0..size).collect::<Vec<_>>().chunks(2000) {
        let texts: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "memory {i}: talked about {} and {} with {}",
                    WORDS[i % 16],
                    WORDS[(i / 16) % 16],
                    WORDS[(i / 7) % 16]
                )
            })
            .collect();
        let v = hash.embed(&texts).unwrap();
        for (j, i) in chunk.iter().enumerate() {
            let mut r = tests::bench::record(*i, texts[j].clone());
            r.cube_id = format!("c{:04}", i % cubes);
            r.user_id = format!("u{}", (i / cubes) % 10);
            r.created_at = T0 + (*i as i64 % 720) * HOUR;
            r.updated_at = r.created_at;
            store.insert(&mut wtxn, &r, &v[j]).unwrap();
        }
    }
    store.finish(&mut wtxn, true).unwrap();
    store.commit(wtxn).unwrap();
    t.elapsed().as_secs_f64()
}

/// Runs one statement in process; its time in ms and its output.
async fn run(
    sql: &sql::Engine,
    session: &sql::Session,
    statement: String,
) -> (f64, sql::QueryOutput) {
    let t = Instant::now();
    let out = sql.query(&statement, session).await.unwrap();
    (t.elapsed().as_secs_f64() * 1e3, out)
}

/// The cube the `i`-th query reads.
fn cube_of(i: usize, cubes: usize) -> String {
    format!("c{:04}", (i * 37) % cubes)
}

/// Times of the SQL queries (ms each) and what they returned.
#[derive(Default)]
struct Timings {
    filtered: Vec<f64>,
    filtered_rows: usize,
    cube_count: Vec<f64>,
    full: Vec<f64>,
    groups: usize,
    full_count: Vec<f64>,
}

/// The single-cube and full-table queries, `n` runs each (20 for the full-table ones) after a
/// warm-up.
async fn queries(sql: &sql::Engine, session: &sql::Session, n: usize, cubes: usize) -> Timings {
    let filtered = |i: usize| {
        format!(
            "SELECT id, memory, created_at FROM memories WHERE cube_id = '{}' AND user_id = 'u3'",
            cube_of(i, cubes)
        )
    };
    for i in 0..20 {
        run(sql, session, filtered(i)).await;
    }
    let mut t = Timings::default();
    for i in 0..n {
        let (ms, out) = run(sql, session, filtered(i)).await;
        t.filtered_rows = out.rows;
        t.filtered.push(ms);
    }
    for i in 0..n {
        let q = format!(
            "SELECT memory_type, count(*) FROM memories WHERE cube_id = '{}' GROUP BY memory_type",
            cube_of(i, cubes)
        );
        t.cube_count.push(run(sql, session, q).await.0);
    }
    // Full-table aggregate: memories per user per day over every cube.
    for _ in 0..20 {
        let q = "SELECT user_id, date_trunc('day', created_at) AS day, count(*) AS n FROM memories GROUP BY user_id, day";
        let (ms, out) = run(sql, session, q.into()).await;
        t.groups = out.rows;
        t.full.push(ms);
    }
    for _ in 0..20 {
        let q = "SELECT count(*) FROM memories".into();
        t.full_count.push(run(sql, session, q).await.0);
    }
    t
}

/// Rows the scan decoded, from the plan's metrics: (single-cube rows, its cubes, full count
/// rows).
async fn scanned(sql: &sql::Engine, session: &sql::Session, cubes: usize) -> (u64, u64, u64) {
    let q = format!(
        "EXPLAIN ANALYZE SELECT id FROM memories WHERE cube_id = '{}' AND user_id = 'u3'",
        cube_of(1, cubes)
    );
    let (_, explain) = run(sql, session, q).await;
    let text = sql::format::pretty(&explain.batches).unwrap();
    let q = "EXPLAIN ANALYZE SELECT count(*) FROM memories".into();
    let (_, explain_all) = run(sql, session, q).await;
    let text_all = sql::format::pretty(&explain_all.batches).unwrap();
    (
        metric(&text, "rows_scanned"),
        metric(&text, "cubes_scanned"),
        metric(&text_all, "rows_scanned"),
    )
}

/// `search()` over `POST /sql` against `POST /product/search`, alternated query by query:
/// (REST ms, SQL ms, queries with the same `text_mem` ids in the same order).
async fn rest_vs_sql(url: &str, n: usize, cubes: usize) -> (Vec<f64>, Vec<f64>, usize) {
    let client = reqwest::Client::new();
    let post = |path: &'static str, body: Value| {
        let (client, url) = (client.clone(), format!("{url}{path}"));
        async move {
            let t = Instant::now();
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let v: Value = r.json().await.unwrap();
            (t.elapsed().as_secs_f64() * 1e3, v)
        }
    };
    let query = |i: usize| {
        format!(
            "what did they say about {} and {}",
            WORDS[i % 16],
            WORDS[(i * 5) % 16]
        )
    };
    let rest_body = |i: usize| json!({"query": query(i), "user_id": "u", "readable_cube_ids": [cube_of(i, cubes)], "top_k": 10});
    let sql_body = |i: usize| json!({"sql": format!("SELECT bucket, rank, id, memory, score FROM search('{}', 10, '{}')", query(i), cube_of(i, cubes))});
    for i in 0..20 {
        post("/product/search", rest_body(i)).await;
        post("/sql", sql_body(i)).await;
    }
    let (mut rest, mut via_sql) = (Vec::new(), Vec::new());
    let mut same = 0;
    for i in 0..n {
        let (a, rv) = post("/product/search", rest_body(i)).await;
        let (b, sv) = post("/sql", sql_body(i)).await;
        rest.push(a);
        via_sql.push(b);
        let rest_ids: Vec<&str> = rv["data"]["text_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        let sql_ids: Vec<&str> = sv["data"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["bucket"] == "text_mem")
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        same += (rest_ids == sql_ids) as usize;
    }
    (rest, via_sql, same)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let size = env("MEMOS_BENCH_SQL_SIZE", 100_000);
    let cubes = env("MEMOS_BENCH_SQL_CUBES", 1000);
    let n = env("MEMOS_BENCH_QUERIES", 200);
    let dir = tempfile::tempdir().unwrap();
    let cfg = tests::config(dir.path());
    let store = Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    let fill = fill(&store, size, cubes);
    eprintln!("filled {size} memories in {fill:.1} s");

    let s = tests::Server::start_with_store(cfg.clone(), store.clone()).await;
    let m = s.memos.clone();
    let session = server::sqlapi::session(&m, &Principal::local()).unwrap();
    let t = queries(&m.sql, &session, n, cubes).await;
    let (filtered_rows, groups) = (t.filtered_rows, t.groups);
    let (scanned, cubes_scanned, scanned_all) = scanned(&m.sql, &session, cubes).await;
    // A Prometheus scrape: store gauges are computed from the per-cube bitmaps at scrape time.
    let mut scrape = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let text = m.metrics_text().await.unwrap();
        scrape.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(text.contains("memos_memories{"));
    }
    let (rest, via_sql, same) = rest_vs_sql(&s.url, n, cubes).await;
    drop((m, session));
    s.stop().await;

    let (f50, f99) = stats(t.filtered);
    let (c50, c99) = stats(t.cube_count);
    let (a50, a99) = stats(t.full);
    let (n50, n99) = stats(t.full_count);
    let (r50, r99) = stats(rest);
    let (s50, s99) = stats(via_sql);
    let (m50, m99) = stats(scrape);
    let md = format!(
        "SQL (`cargo bench --profile dev -p benches --bench sql`): {size} memories in {cubes} cubes ({per} per cube, 10 users each, 30 days), filled directly in {fill:.0} s with hashed vectors; in-process `Engine::query` unless marked HTTP; {n} runs per query (20 for the full-table ones) after a warm-up; 2 cores.\n\n\
| query | p50 ms | p99 ms | target |\n|---|---|---|---|\n\
| single cube, filtered: `SELECT id, memory, created_at FROM memories WHERE cube_id = … AND user_id = 'u3'` ({filtered_rows} rows) | {f50:.2} | {f99:.2} | p50 ≤ 5 |\n\
| single cube aggregate: `SELECT memory_type, count(*) … WHERE cube_id = … GROUP BY memory_type` | {c50:.2} | {c99:.2} | |\n\
| full-table aggregate: memories per user per day over all {size} ({groups} groups) | {a50:.1} | {a99:.1} | ≤ 200 |\n\
| full-table `SELECT count(*) FROM memories` | {n50:.1} | {n99:.1} | |\n\
| HTTP `POST /product/search` (top_k 10, real query embedding) | {r50:.2} | {r99:.2} | |\n\
| HTTP `POST /sql` with `search(q, 10, cube)` | {s50:.2} | {s99:.2} | within 20 % |\n\
| `search()` − REST | {:+.2} ({:+.1} %) | | |\n\
| Prometheus scrape of `/metrics` (memories by type/status from {cubes} cubes' bitmaps, store stats) | {m50:.1} | {m99:.1} | |\n\n\
Same `text_mem` ids in the same order from both paths in {same} of {n} queries.\n\n\
Rows decoded (`EXPLAIN ANALYZE`, the scan's `rows_scanned` / `cubes_scanned` metrics): the single-cube filtered query decoded **{scanned}** records in {cubes_scanned} cube (the cube ∩ user bitmap), not {size}; `SELECT count(*) FROM memories` decoded {scanned_all}.\n",
        s50 - r50,
        (s50 - r50) / r50 * 100.0,
        per = size / cubes,
    );
    println!("{md}");
    memos::eval::write_section(&tests::root().join("BENCHMARKS.md"), "sql", &md).unwrap();
}
