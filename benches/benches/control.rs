//! Memory control costs on one cube: search now vs `as_of` (system time) vs `event_as_of`,
//! a synchronous feedback correction, a hard delete by id with its receipt, and MemCube
//! export/import. Writes the `control` section of BENCHMARKS.md.
//!
//! `cargo bench --profile dev -p benches --bench control`; `MEMOS_BENCH_CONTROL_SIZE` (default
//! 5000) and `MEMOS_BENCH_QUERIES` (default 100) adjust the run.

use std::sync::Arc;
use std::time::Instant;

use operators::embed::{Embedder, HashEmbedder};
use serde_json::{Value, json};

fn texts() -> Vec<String> {
    tests::bench::locomo_turns()
}

fn p(v: &mut [f64]) -> (f64, f64) {
    (tests::bench::pct(v, 0.5), tests::bench::pct(v, 0.99))
}

async fn post(url: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

fn dir_bytes(d: &std::path::Path) -> u64 {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// One cube of `size` LoCoMo turns with hashed vectors, indexed as an idle server has it.
fn fill(store: &store::Store, corpus: &[String], size: usize) {
    let hash = HashEmbedder::new(384);
    let mut wtxn = store.write_txn().unwrap();
    let t: Vec<String> = (0..size)
        .map(|i| format!("{} (#{i})", corpus[i % corpus.len()]))
        .collect();
    let v = hash.embed(&t).unwrap();
    for i in 0..size {
        let mut r = tests::bench::record(i, t[i].clone());
        r.created_at = 1;
        r.updated_at = 1;
        store.insert(&mut wtxn, &r, &v[i]).unwrap();
    }
    store.finish(&mut wtxn, true).unwrap();
    store.commit(wtxn).unwrap();
}

/// Search latency (ms) now, with `as_of` and with `event_as_of`, after 5 warm-up queries.
async fn search_times(url: &str, questions: &[String]) -> Vec<Vec<f64>> {
    let search = format!("{url}/product/search");
    let now = store::time::micros_to_rfc3339(store::time::now_micros());
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for (n, q) in questions.iter().enumerate() {
        for (k, extra) in [
            json!({}),
            json!({"as_of": now}),
            json!({"event_as_of": now}),
        ]
        .into_iter()
        .enumerate()
        {
            let mut body =
                json!({"query": q, "user_id": "u", "readable_cube_ids": ["bench"], "top_k": 10});
            for (a, b) in extra.as_object().unwrap() {
                body[a] = b.clone();
            }
            let t = Instant::now();
            post(&search, body).await;
            if n >= 5 {
                times[k].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    times
}

/// Feedback corrections: 40 facts, each corrected once ("No, it's X not Y"); ms each.
async fn feedback_times(url: &str) -> Vec<f64> {
    // Feedback corrections: 40 facts, each corrected once ("No, it's X not Y").
    let add = format!("{url}/product/add");
    for i in 0..40 {
        post(
            &add,
            json!({"user_id": "u", "writable_cube_ids": ["bench"], "async_mode": "sync",
        "messages": [{"role": "user", "content": format!("My locker {i} code is lk{i}x.")}]}),
        )
        .await;
    }
    let fb = format!("{url}/product/feedback");
    let mut feedback = Vec::new();
    for i in 0..40 {
        let t = Instant::now();
        let r = post(
            &fb,
            json!({"user_id": "u", "writable_cube_ids": ["bench"], "async_mode": "sync",
        "feedback_content": format!("No, it's nk{i}y not lk{i}x.")}),
        )
        .await;
        feedback.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(
            r["data"][0]["record"]["update"].as_array().unwrap().len(),
            1,
            "{r}"
        );
    }
    feedback
}

/// Hard deletes by id, one memory each, with the receipt; ms each.
async fn delete_times(url: &str) -> Vec<f64> {
    // Hard deletes by id, one memory each, with the receipt.
    let del = format!("{url}/product/delete_memory");
    let mut deletes = Vec::new();
    for i in 0..40 {
        let t = Instant::now();
        let r = post(
            &del,
            json!({"memory_ids": [format!("bench-{}", i * 11)], "writable_cube_ids": ["bench"]}),
        )
        .await;
        deletes.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r["data"]["receipt"]["records"], 1);
    }
    deletes
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let size: usize = std::env::var("MEMOS_BENCH_CONTROL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let n_queries: usize = std::env::var("MEMOS_BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let cfg = tests::config(&dir.path().join("a"));
    // One cube of LoCoMo turns with hashed vectors (queries and feedback texts go through the
    // real model), indexed as an idle server would have it.
    let store = Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    let corpus = texts();
    fill(&store, &corpus, size);
    let s = tests::Server::start_with_store(cfg.clone(), store.clone()).await;
    let questions: Vec<String> = corpus.iter().step_by(7).take(n_queries).cloned().collect();
    let mut times = search_times(&s.url, &questions).await;
    let mut feedback = feedback_times(&s.url).await;
    let mut deletes = delete_times(&s.url).await;
    // Export, then import into an empty store.
    let snap = dir.path().join("snap");
    let t = Instant::now();
    let m = post(
        &format!("{}/product/export_cube", s.url),
        json!({"mem_cube_id": "bench", "dir": snap}),
    )
    .await;
    let export_s = t.elapsed().as_secs_f64();
    let exported = m["data"]["counts"]["memories"].as_u64().unwrap();
    let bytes = dir_bytes(&snap);
    s.stop().await;
    let b = tests::Server::start(tests::config(&dir.path().join("b"))).await;
    let t = Instant::now();
    post(
        &format!("{}/product/import_cube", b.url),
        json!({"dir": snap}),
    )
    .await;
    let import_s = t.elapsed().as_secs_f64();
    b.stop().await;

    let (n50, n99) = p(&mut times[0]);
    let (a50, a99) = p(&mut times[1]);
    let (e50, e99) = p(&mut times[2]);
    let (f50, f99) = p(&mut feedback);
    let (d50, d99) = p(&mut deletes);
    let md = format!(
        "Memory control (`cargo bench --profile dev -p benches --bench control`): one cube of {size} LoCoMo turns (hashed vectors, ANN trees built; queries and feedback texts embedded by the real model), {n} queries over HTTP, top_k 10, 2 cores.\n\n\
| operation | p50 ms | p99 ms |\n|---|---|---|\n\
| search, now (ANN + BM25) | {n50:.2} | {n99:.2} |\n\
| search `as_of` (system time: every record rewound, exhaustive cosine) | {a50:.2} | {a99:.2} |\n\
| search `event_as_of` (event time) | {e50:.2} | {e99:.2} |\n\
| feedback, sync (\"No, it's X not Y\": find, write successor, archive, commit) | {f50:.2} | {f99:.2} |\n\
| hard delete by id with receipt (record, vector + tree rebuild, postings, history, derived, KV) | {d50:.2} | {d99:.2} |\n\n\
| MemCube | value |\n|---|---|\n\
| export ({exported} memories with history and vectors) | {export_s:.2} s ({:.0} memories/s) |\n\
| snapshot size (Parquet, uncompressed, + manifest) | {:.0} bytes per memory |\n\
| import into an empty store | {import_s:.2} s ({:.0} memories/s) |\n",
        exported as f64 / export_s,
        bytes as f64 / exported as f64,
        exported as f64 / import_s,
        n = questions.len() - 5,
    );
    println!("{md}");
    let out = tests::root().join("BENCHMARKS.md");
    memos::eval::write_section(&out, "control", &md).unwrap();
}
