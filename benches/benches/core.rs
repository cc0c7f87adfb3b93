//! The core benchmark harness (`cargo bench --profile dev -p benches`): embedder throughput, search latency
//! at 10k and 100k memories in one cube, ingest throughput, resident memory. Results are
//! printed and written to the `core` section of BENCHMARKS.md.
//!
//! Corpus: LoCoMo turns (real text). The 10k/100k stores need more distinct memories than
//! LoCoMo has (5,882 turns), so each memory is a LoCoMo turn with a varied date prefix and a
//! per-copy suffix; its vector is the real MiniLM embedding of the turn plus small Gaussian noise
//! (re-normalised), which keeps the neighbourhood structure of real embeddings while making
//! 100k distinct points without 50 minutes of embedding. Queries are real LoCoMo questions,
//! embedded by the real model when "query embedding included".
//!
//! `MEMOS_BENCH_SIZES=10000,100000` and `MEMOS_BENCH_QUERIES=500` adjust the run.

use std::sync::Arc;
use std::time::Instant;

use operators::embed::{Embedder, HashEmbedder};
use pipelines::runtime::{Outcome, Payload, Processor};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use store::heed::RoTxn;
use store::search::{SearchRequest, search};
use store::{Filter, Store};

fn locomo() -> Value {
    let p = tests::root().join("../shared/data/locomo/locomo10.json");
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .expect("locomo json")
}

fn turns_and_questions(d: &Value) -> (Vec<String>, Vec<String>) {
    let mut turns = Vec::new();
    let mut qs = Vec::new();
    for s in d.as_array().unwrap() {
        let conv = &s["conversation"];
        let mut n = 1;
        while let Some(ts) = conv.get(format!("session_{n}")).and_then(Value::as_array) {
            let date = conv[format!("session_{n}_date_time")]
                .as_str()
                .unwrap_or("");
            for t in ts {
                turns.push(format!(
                    "[{date}] {}: {}",
                    t["speaker"].as_str().unwrap_or(""),
                    t["text"].as_str().unwrap_or("")
                ));
            }
            n += 1;
        }
        for q in s["qa"].as_array().unwrap() {
            if let Some(q) = q["question"].as_str() {
                qs.push(q.to_string());
            }
        }
    }
    (turns, qs)
}

/// Section 1: Embedder throughput: turns and questions, batch 1 and 32, one and two gemm threads.
fn embedder_section(
    emb: &Arc<dyn Embedder>,
    turns: &[String],
    questions: &[String],
    md: &mut String,
) {
    // 1. Embedder throughput.
    let sample: Vec<String> = turns.iter().take(256).cloned().collect();
    let short: Vec<String> = questions.iter().take(256).cloned().collect();
    emb.embed(&sample[..8]).unwrap();
    md.push_str("### Embedder (all-MiniLM-L6-v2, candle, CPU)\n\n| input | gemm threads | batch | sentences/s |\n|---|---:|---:|---:|\n");
    for threads in [1usize, 2] {
        // SAFETY: single-threaded at this point of the harness; candle reads this variable on
        // every matmul to pick its parallelism.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
        for (label, texts) in [
            ("LoCoMo turns with date prefix (~40 tokens)", &sample),
            ("LoCoMo questions (~12 tokens)", &short),
        ] {
            let t = Instant::now();
            for s in texts.iter().take(64) {
                emb.embed(std::slice::from_ref(s)).unwrap();
            }
            let b1 = 64.0 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            for c in texts.chunks(32) {
                emb.embed(c).unwrap();
            }
            let b32 = texts.len() as f64 / t.elapsed().as_secs_f64();
            md.push_str(&format!(
                "| {label} | {threads} | 1 | {b1:.0} |\n| {label} | {threads} | 32 | {b32:.0} |\n"
            ));
            println!("embedder {label}, {threads} threads: batch 1 {b1:.0}/s, batch 32 {b32:.0}/s");
        }
    }
    // SAFETY: as above.
    unsafe { std::env::remove_var("RAYON_NUM_THREADS") };
}

/// Section 2: Ingest throughput through the real pipeline stages, with the model and a trivial embedder.
fn ingest_section(emb: &Arc<dyn Embedder>, turns: &[String], md: &mut String) {
    // 2. Ingest throughput through the real pipeline stages (window, extract, embed, dedupe, sink).
    md.push_str("\n### Ingest (pipeline: decode, window, extract, embed, dedupe, one LMDB commit per batch of 256)\n\n| embedder | events | events/s |\n|---|---:|---:|\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (label, e, n) in [
        ("all-MiniLM-L6-v2", emb.clone(), 1024usize),
        (
            "trivial (hashed trigrams)",
            Arc::new(HashEmbedder::new(384)) as Arc<dyn Embedder>,
            4096,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tests::config(dir.path());
        let st = Arc::new(Store::open(dir.path(), cfg.store_options()).unwrap());
        let commits = pipelines::Committer::new(
            st.clone(),
            Arc::new(pipelines::metrics::Metrics::new()),
            vec![],
        );
        let mut p = Processor::new(&cfg.engine(), commits, e.clone());
        let events: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            serde_json::to_vec(&json!({"event_id": format!("b{i}"), "kind": "messages", "cube_id": "bench", "user_id": "u",
                "payload": {"messages": [{"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": turns[i % turns.len()], "chat_time": "1:56 pm on 8 May, 2023"}]}}))
            .unwrap()
        })
        .collect();
        if label.starts_with("all-MiniLM") {
            // The embedder alone on the same texts, in the same calls of 256.
            let texts: Vec<String> = (0..n)
                .map(|i| {
                    let role = if i % 2 == 0 { "user" } else { "assistant" };
                    format!(
                        "[1:56 pm on 8 May, 2023] {role}: {}",
                        turns[i % turns.len()]
                    )
                })
                .collect();
            let t = Instant::now();
            for c in texts.chunks(256) {
                e.embed(c).unwrap();
            }
            let own = n as f64 / t.elapsed().as_secs_f64();
            md.push_str(&format!(
                "| (the embedder alone: same texts, calls of 256) | {n} | {own:.0} |\n"
            ));
            println!("embedder alone on the ingest texts: {own:.0} texts/s");
        }
        let t = Instant::now();
        for chunk in events.chunks(256) {
            let (outs, _) = p.process(
                chunk
                    .iter()
                    .map(|b| (Payload::Bytes(b.clone()), "bench".to_string(), None))
                    .collect(),
            );
            assert!(outs.iter().all(|o| matches!(o, Outcome::Stored { .. })));
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        md.push_str(&format!("| {label} | {n} | {rate:.0} |\n"));
        println!("ingest with {label}: {rate:.0} events/s");
    }
    drop(rt);
}

/// A store of `size` memories in one cube: LoCoMo turns with varied dates and real vectors
/// plus small noise. Returns its directory, the store and the build time in seconds.
fn build_store(
    turns: &[String],
    base_vecs: &[Vec<f32>],
    size: usize,
    oversampling: usize,
) -> (tempfile::TempDir, Store, f64) {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(
        dir.path(),
        store::StoreOptions {
            ann_oversampling: oversampling,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let t = Instant::now();
    for chunk in (0..size).collect::<Vec<_>>().chunks(5000) {
        let mut w = st.write_txn().unwrap();
        for &i in chunk {
            let b = i % base_vecs.len();
            let text = format!(
                "{} (note {})",
                turns[b].replacen("[", &format!("[day {} ", i / base_vecs.len()), 1),
                i
            );
            let mut v: Vec<f32> = base_vecs[b]
                .iter()
                .map(|x| x + 0.02 * (rng.random::<f32>() - 0.5))
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            st.insert(&mut w, &tests::bench::record(i, text), &v)
                .unwrap();
        }
        st.commit(w).unwrap();
    }
    st.index_pending().unwrap();
    (dir, st, t.elapsed().as_secs_f64())
}

/// Where the search time goes (means over the queries, ms): candidates, ANN, BM25.
fn breakdown(st: &Store, txn: &RoTxn, qtexts: &[String], qvecs: &[Vec<f32>], size: usize) {
    let f = Filter::True;
    let (mut tc, mut tv, mut tl) = (0.0, 0.0, 0.0);
    for (q, v) in qtexts.iter().zip(qvecs) {
        let t = Instant::now();
        let c = st.candidates(txn, "bench", None, &f).unwrap();
        tc += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        st.vector_search(txn, v, 100, &c).unwrap();
        tv += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        st.bm25_search(txn, "bench", q, 100, &c).unwrap();
        tl += t.elapsed().as_secs_f64() * 1e3;
    }
    let nq = qtexts.len() as f64;
    println!(
        "breakdown at {size}: candidates {:.2} ms, ann {:.2} ms, bm25 {:.2} ms",
        tc / nq,
        tv / nq,
        tl / nq
    );
}

/// ANN quality: the vector retriever's top 10 against an exact scan of the cube.
fn ann_recall(st: &Store, txn: &RoTxn, qvecs: &[Vec<f32>]) -> f64 {
    let all = st.candidates(txn, "bench", None, &Filter::True).unwrap();
    let mut recall = 0.0;
    let probe = qvecs.len().min(100);
    for v in qvecs.iter().take(probe) {
        let ann: Vec<u32> = st
            .vector_search(txn, v, 10, &all)
            .unwrap()
            .into_iter()
            .map(|x| x.0)
            .collect();
        let mut exact: Vec<(u32, f32)> = all
            .iter()
            .map(|id| (id, st.cosine(txn, id, v).unwrap().unwrap_or(0.0)))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        recall += exact
            .iter()
            .take(10)
            .filter(|(id, _)| ann.contains(id))
            .count() as f64
            / 10.0;
    }
    recall / probe as f64
}

/// Section 3: Search latency (without and with the query embedding), ANN recall and memory at one
/// store size.
#[allow(clippy::too_many_arguments)]
fn search_row(
    emb: &Arc<dyn Embedder>,
    turns: &[String],
    base_vecs: &[Vec<f32>],
    qtexts: &[String],
    qvecs: &[Vec<f32>],
    size: usize,
    oversampling: usize,
    md: &mut String,
) {
    let (_dir, st, build) = build_store(turns, base_vecs, size, oversampling);
    let f = Filter::True;
    let txn = st.read_txn().unwrap();
    let mut no_embed = Vec::new();
    for (q, v) in qtexts.iter().zip(qvecs) {
        let t = Instant::now();
        let hits = search(&st, &txn, &SearchRequest::new("bench", q, Some(v), 10, &f)).unwrap();
        no_embed.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!hits.is_empty());
    }
    let mut with_embed = Vec::new();
    for q in qtexts.iter().take(200) {
        let t = Instant::now();
        let v = emb.embed(std::slice::from_ref(q)).unwrap().pop().unwrap();
        let hits = search(&st, &txn, &SearchRequest::new("bench", q, Some(&v), 10, &f)).unwrap();
        with_embed.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!hits.is_empty());
    }
    breakdown(&st, &txn, qtexts, qvecs, size);
    let ann_recall = ann_recall(&st, &txn, qvecs);
    let disk = st.stats().unwrap().disk_bytes as f64 / 1048576.0;
    let row = format!(
        "| {size} | {build:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {ann_recall:.3} | {:.0} | {disk:.0} |\n",
        tests::bench::pct(&mut no_embed, 0.5),
        tests::bench::pct(&mut no_embed, 0.99),
        tests::bench::pct(&mut with_embed, 0.5),
        tests::bench::pct(&mut with_embed, 0.99),
        tests::bench::rss_mb()
    );
    print!("search {row}");
    println!(
        "database sizes at {size}: {:?}",
        st.stats().unwrap().databases
    );
    md.push_str(&row);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("MEMOS_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let n_queries: usize = std::env::var("MEMOS_BENCH_QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let data = locomo();
    let (turns, questions) = turns_and_questions(&data);
    let emb = tests::embedder();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Machine: {threads} cores, no GPU. Build: `cargo bench --profile dev -p benches` (dev profile: dependencies opt-level 2, workspace crates opt-level 1).\n\n"
    );

    let only_search = std::env::var("MEMOS_BENCH_ONLY").is_ok_and(|v| v == "search");
    let oversampling: usize = std::env::var("MEMOS_BENCH_OVERSAMPLING")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(store::StoreOptions::default().ann_oversampling);
    if !only_search {
        embedder_section(&emb, &turns, &questions, &mut md);
        ingest_section(&emb, &turns, &mut md);
    }
    // 3. Search latency at each size.
    let base_vecs = emb
        .embed(&turns.iter().take(2000).cloned().collect::<Vec<_>>())
        .unwrap();
    let qtexts: Vec<String> = questions.iter().take(n_queries).cloned().collect();
    let qvecs = emb.embed(&qtexts).unwrap();
    md.push_str("\n### Search (one cube, hybrid ANN + BM25, convex fusion, top_k 10)\n\n| memories | build s | p50 ms (no embed) | p99 ms (no embed) | p50 ms (with query embedding) | p99 ms (with query embedding) | ANN recall@10 vs exact | RSS MB | LMDB MB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &size in &sizes {
        search_row(
            &emb,
            &turns,
            &base_vecs,
            &qtexts,
            &qvecs,
            size,
            oversampling,
            &mut md,
        );
    }
    if only_search {
        return;
    }
    let out = tests::root().join("BENCHMARKS.md");
    memos::eval::write_section(&out, "core", &md).unwrap();
    println!("written to {}", out.display());
}
