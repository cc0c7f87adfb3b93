//! REST API overhead: the same searches in-process (`Memos::search`) and over real HTTP with an
//! API key (auth, scope check, rate limiter, JSON), plus request throughput of a lookup that
//! needs no embedding, with and without keys. Writes the `api` section of BENCHMARKS.md.
//!
//! `cargo bench --profile dev -p benches --bench api`; `MEMOS_BENCH_API_SIZE` (default 10000) and
//! `MEMOS_BENCH_QUERIES` (default 200) adjust the run.

use std::sync::Arc;
use std::time::Instant;

use operators::embed::{Embedder, HashEmbedder};
use serde_json::{Value, json};
use server::auth::{KeyConfig, Principal};

fn texts() -> Vec<String> {
    tests::bench::locomo_turns()
}

async fn throughput(url: &str, key: Option<&str>, body: Value, total: usize, conc: usize) -> f64 {
    let client = reqwest::Client::new();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, url, body) = (client.clone(), url.to_string(), body.clone());
        let key = key.map(String::from);
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / conc {
                let mut r = client.post(&url).json(&body);
                if let Some(k) = &key {
                    r = r.header("Authorization", format!("Token {k}"));
                }
                let resp = r.send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                let _ = resp.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / t.elapsed().as_secs_f64()
}

/// LoCoMo turns repeated to `size` memories in one cube, hashed vectors.
fn fill(store: &store::Store, corpus: &[String], size: usize) {
    let hash = HashEmbedder::new(384);
    let mut wtxn = store.write_txn().unwrap();
    for chunk in (0..size).collect::<Vec<_>>().chunks(1000) {
        let t: Vec<String> = chunk
            .iter()
            .map(|i| format!("{} (#{i})", corpus[i % corpus.len()]))
            .collect();
        let v = hash.embed(&t).unwrap();
        for (j, i) in chunk.iter().enumerate() {
            store
                .insert(&mut wtxn, &tests::bench::record(*i, t[j].clone()), &v[j])
                .unwrap();
        }
    }
    store.finish(&mut wtxn, true).unwrap();
    store.commit(wtxn).unwrap();
}

/// Search latency (ms) in process and over HTTP with an API key, alternated query by query
/// after a warm-up so drift hits both equally.
async fn latencies(s: &tests::Server, questions: &[String]) -> (Vec<f64>, Vec<f64>) {
    let m = s.memos.clone();
    let local = Principal::local();
    let req = |q: &str| server::api::SearchRequest {
        query: q.into(),
        user_id: Some("u".into()),
        readable_cube_ids: Some(vec!["bench".into()]),
        top_k: 10,
        ..Default::default()
    };
    // Warm up both paths, then alternate them query by query so drift hits both equally.
    let client = reqwest::Client::new();
    let over_http = |q: String| {
        let client = client.clone();
        let url = format!("{}/product/search", s.url);
        async move {
            let body =
                json!({"query": q, "user_id": "u", "readable_cube_ids": ["bench"], "top_k": 10});
            let r = client
                .post(url)
                .header("Authorization", "Token bench-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let _: Value = r.json().await.unwrap();
        }
    };
    for q in questions.iter().take(30) {
        m.search(&req(q), &local).await.unwrap();
        over_http(q.clone()).await;
    }
    let (mut direct, mut http) = (Vec::new(), Vec::new());
    for q in questions {
        let t = Instant::now();
        m.search(&req(q), &local).await.unwrap();
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        over_http(q.clone()).await;
        http.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (direct, http)
}

/// Requests answered 401 (an unknown key) per second, one client.
async fn denied_rate(url: &str) -> f64 {
    let client = reqwest::Client::new();
    let t = Instant::now();
    for _ in 0..500 {
        let r = client
            .post(format!("{url}/product/search"))
            .header("Authorization", "Token wrong")
            .json(&json!({"query": "x", "user_id": "u"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    500.0 / t.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let size: usize = std::env::var("MEMOS_BENCH_API_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let n_queries: usize = std::env::var("MEMOS_BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.auth.keys = vec![KeyConfig {
        cubes: vec!["bench*".into()],
        rate_limit_per_minute: 10_000_000,
        ..KeyConfig::full("bench", "bench-key")
    }];
    // The store: LoCoMo turns repeated to `size`, vectors from the hashed embedder (the queries
    // go through the real model, so latency includes a real query embedding).
    let store = Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    let corpus = texts();
    fill(&store, &corpus, size);
    let questions: Vec<String> = corpus.iter().step_by(7).take(n_queries).cloned().collect();

    let s = tests::Server::start_with_store(cfg.clone(), store.clone()).await;
    let (mut direct, mut http) = latencies(&s, &questions).await;
    let ids: Vec<String> = (0..10)
        .map(|i| tests::bench::record(i * 97, String::new()).id)
        .collect();
    let by_ids = format!("{}/product/get_memory_by_ids", s.url);
    let _ = throughput(&by_ids, Some("bench-key"), json!(ids), 200, 8).await;
    let keyed = throughput(&by_ids, Some("bench-key"), json!(ids), 4000, 8).await;
    let denied = denied_rate(&s.url).await;
    s.stop().await;
    // Open mode, same store.
    let mut open_cfg = cfg.clone();
    open_cfg.auth.keys.clear();
    let s = tests::Server::start_with_store(open_cfg, store.clone()).await;
    let by_ids = format!("{}/product/get_memory_by_ids", s.url);
    let _ = throughput(&by_ids, None, json!(ids), 200, 8).await;
    let open = throughput(&by_ids, None, json!(ids), 4000, 8).await;
    s.stop().await;

    let (d50, d99) = (
        tests::bench::pct(&mut direct, 0.5),
        tests::bench::pct(&mut direct, 0.99),
    );
    let (h50, h99) = (
        tests::bench::pct(&mut http, 0.5),
        tests::bench::pct(&mut http, 0.99),
    );
    let md = format!(
        "REST API overhead (`cargo bench --profile dev -p benches --bench api`): {size} memories in one cube, {n} LoCoMo turns as queries (~40 tokens: the query embedding alone is ~20 ms of each search), top_k 10, all four MemOS buckets, client and server on the same 2 cores.\n\n\
| path | p50 ms | p99 ms |\n|---|---|---|\n\
| `Memos::search` in-process | {d50:.2} | {d99:.2} |\n\
| `POST /product/search` over HTTP with an API key (auth, scope, rate limit, JSON) | {h50:.2} | {h99:.2} |\n\
| difference | {:.2} | |\n\n\
| request (no embedding), 8 concurrent clients | requests/s |\n|---|---|\n\
| `get_memory_by_ids` (10 ids) with an API key | {keyed:.0} |\n\
| `get_memory_by_ids` (10 ids), open mode | {open:.0} |\n\
| rejected with 401 (unknown key), 1 client | {denied:.0} |\n",
        h50 - d50,
        n = questions.len()
    );
    println!("{md}");
    let out = tests::root().join("BENCHMARKS.md");
    memos::eval::write_section(&out, "api", &md).unwrap();
}
