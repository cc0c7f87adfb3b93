//! The sink issue's benchmarks (writes the `sink` section of BENCHMARKS.md), all on distinct
//! real text — Synthetic-Persona-Chat utterances, windows of two and three consecutive
//! utterances of one conversation, and LoCoMo turns — never on near-copies:
//!
//! - ingest with embedding off: 80k distinct turns (a seeded shuffle of all of them, so both
//!   halves hold the same mix) into 8 cubes through `memos import` (the release-grade binary),
//!   the first 40k and then the second 40k (cubes holding 5k each);
//! - REST search at 100k memories in one cube, embedding off;
//! - REST search in a 1,000-memory cube of a store of 100k memories in 100 cubes, against
//!   `GET /health` in the same run, with the default vector budget and with a low one;
//! - recall@10 of the vector index against an exact scan on real MiniLM vectors;
//! - resident memory.
//!
//! `cargo build --profile bench --bin memos && cargo bench --workspace --bench sink`.
//! `MEMOS_BENCH_QUERIES` (default 1000) sizes the search runs, `MEMOS_BENCH_RECALL_VECTORS`
//! (default 10000) the recall run (embedded by the real model: the slow part).
//! `MEMOS_BENCH_ONLY=ingest,one,many,recall` runs some sections and prints them without
//! writing BENCHMARKS.md (only a full run writes it).

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use pipelines::runtime::{Incoming, Payload};
use serde_json::{Value, json};

use tests::bench::env;

/// Distinct real conversation turns: SPC utterances, then two- and three-utterance windows of
/// one conversation, then LoCoMo turns.
fn distinct_turns() -> Vec<String> {
    let path = tests::root().join("../shared/data/spc/utterances.jsonl");
    let text = std::fs::read_to_string(path).expect("SPC utterances");
    let mut convs: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("SPC line");
        let conv = v["conversation"].as_str().unwrap_or_default().to_string();
        let t = format!(
            "{}: {}",
            v["speaker"].as_str().unwrap_or_default(),
            v["text"].as_str().unwrap_or_default()
        );
        match convs.last_mut() {
            Some((c, ts)) if *c == conv => ts.push(t),
            _ => convs.push((conv, vec![t])),
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut push = |t: String, out: &mut Vec<String>| {
        if seen.insert(t.clone()) {
            out.push(t);
        }
    };
    for (_, ts) in &convs {
        for t in ts {
            push(t.clone(), &mut out);
        }
    }
    for w in [2, 3] {
        for (_, ts) in &convs {
            for win in ts.windows(w) {
                push(win.join(" "), &mut out);
            }
        }
    }
    for t in tests::bench::locomo_turns() {
        push(t, &mut out);
    }
    out
}

fn event(i: usize, cube: &str, text: &str) -> Value {
    json!({"event_id": format!("e{i}"), "kind": "messages", "cube_id": cube, "user_id": "u",
           "session_id": format!("s{}", i / 20),
           "payload": {"messages": [{"role": "user", "content": text}]}})
}

/// The `memos` binary of the profile this bench was built with.
fn memos_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("MEMOS_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("bench path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("memos");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --profile bench --bin memos` first",
        bin.display()
    );
    bin
}

/// Runs `memos import file` on `data`; returns seconds.
fn import(data: &std::path::Path, file: &std::path::Path) -> f64 {
    let t = Instant::now();
    let out = std::process::Command::new(memos_bin())
        .arg("import")
        .arg(file)
        .env("MEMOS_DATA_DIR", data)
        .env("MEMOS_EMBEDDER__KIND", "hash")
        .env("MEMOS_LOG", "warn")
        .output()
        .expect("memos import");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "memos import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" stored"), "{stdout}");
    eprintln!("import {}: {secs:.1} s — {}", file.display(), stdout.trim());
    secs
}

fn hash_cfg(dir: &std::path::Path) -> server::Config {
    let mut cfg = tests::config(dir);
    cfg.embedder.kind = "hash".into();
    cfg.pipeline.linger_ms = 20;
    cfg
}

async fn hash_server(cfg: server::Config) -> tests::Server {
    let store = Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    let embedder = server::service::load_embedder(&cfg).unwrap();
    tests::Server::start_with_parts(cfg, store, embedder).await
}

/// Ingests `(cube, text)` pairs through the pipeline; returns seconds.
async fn fill(s: &tests::Server, items: &[(String, String)]) -> f64 {
    let t = Instant::now();
    let mut rxs = Vec::with_capacity(items.len());
    for (i, (cube, text)) in items.iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.memos
            .pipeline
            .submit(Incoming {
                payload: Payload::Bytes(event(i, cube, text).to_string().into_bytes()),
                source: "bench".into(),
                position: None,
                reply: Some(tx),
            })
            .await
            .unwrap();
        rxs.push(rx);
    }
    for rx in rxs {
        let o = rx.await.unwrap();
        assert!(
            matches!(o, pipelines::runtime::Outcome::Stored { .. }),
            "{o:?}"
        );
    }
    t.elapsed().as_secs_f64()
}

/// p50 and p99 (ms) of `n` REST searches in `cube`, and of `GET /health` interleaved with them.
async fn search_latency(
    s: &tests::Server,
    cube: &str,
    queries: &[String],
    n: usize,
) -> ((f64, f64), (f64, f64)) {
    let client = reqwest::Client::new();
    let mut lat = Vec::with_capacity(n);
    let mut health = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let q = &queries[i % queries.len()];
        let t = Instant::now();
        let r = client
            .post(format!("{}/product/search", s.url))
            .json(&json!({"query": q, "user_id": "u", "readable_cube_ids": [cube], "top_k": 10}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let b: Value = r.json().await.unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(
            !b["data"]["text_mem"][0]["memories"]
                .as_array()
                .map(|a| a.is_empty())
                .unwrap_or(true),
            "{b}"
        );
        let t = Instant::now();
        let r = client
            .get(format!("{}/health", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let _ = r.bytes().await.unwrap();
        let hms = t.elapsed().as_secs_f64() * 1000.0;
        if i >= 50 {
            lat.push(ms);
            health.push(hms);
        }
    }
    let p = |v: &mut Vec<f64>| (tests::bench::pct(v, 0.5), tests::bench::pct(v, 0.99));
    (p(&mut lat), p(&mut health))
}

/// Section 1: Ingest through `memos import`: 80k distinct turns into 8 cubes, in two halves.
fn ingest_section(turns: &[String], md: &mut String) {
    // The 80k are a seeded shuffle of every distinct turn, so both halves hold the same mix of
    // single utterances, windows and LoCoMo turns: in corpus order the first 40k are single
    // utterances (~60 characters) and the second 40k two-utterance windows (~110), and the
    // halves' ratio would measure text length, not the store's growth.
    let mut turns = turns.to_vec();
    {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        turns.shuffle(&mut rand::rngs::StdRng::seed_from_u64(18));
    }
    let mean = |r: std::ops::Range<usize>| {
        turns[r.clone()]
            .iter()
            .map(|t| t.chars().count())
            .sum::<usize>() as f64
            / r.len() as f64
    };
    let (m1, m2) = (mean(0..40_000), mean(40_000..80_000));
    eprintln!("ingest turns: mean {m1:.0} characters in the first 40k, {m2:.0} in the second");
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<std::path::PathBuf> = (0..2)
        .map(|half| {
            let path = dir.path().join(format!("half-{half}.jsonl"));
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            let range = half * 40_000..(half + 1) * 40_000;
            for (i, turn) in range.clone().zip(&turns[range]) {
                let cube = format!("tenant-{}", i % 8);
                writeln!(f, "{}", event(i, &cube, turn)).unwrap();
            }
            path
        })
        .collect();
    let data = dir.path().join("data");
    let first = import(&data, &files[0]);
    let second = import(&data, &files[1]);
    let (r1, r2) = (40_000.0 / first, 40_000.0 / second);
    md.push_str("| ingest, `memos import`, embedding off | events | mean characters | seconds | events/s |\n|---|---:|---:|---:|---:|\n");
    md.push_str(&format!(
        "| first 40k (8 empty cubes) | 40000 | {m1:.0} | {first:.1} | {r1:.0} |\n| second 40k (cubes holding 5k each) | 40000 | {m2:.0} | {second:.1} | {r2:.0} |\n\nSecond half / first half: **{:.0} %**.\n\n",
        100.0 * r2 / r1
    ));
    drop(dir);
}

/// Search latency and `/health` latency (p50, p99 ms each) over REST.
type Latency = ((f64, f64), (f64, f64));

/// Section 2: 100k memories in one cube: latency, RSS and the vector codes in RAM.
fn one_cube(
    rt: &tokio::runtime::Runtime,
    turns: &[String],
    queries: &[String],
    queries_n: usize,
) -> (Latency, f64, store::vecmem::VecMemStats) {
    let dir = tempfile::tempdir().unwrap();
    let r = rt.block_on(async {
        let s = hash_server(hash_cfg(dir.path())).await;
        let items: Vec<(String, String)> = turns[..100_000]
            .iter()
            .map(|t| ("big".to_string(), t.clone()))
            .collect();
        let secs = fill(&s, &items).await;
        eprintln!("100k into one cube: {secs:.1} s");
        let lat = search_latency(&s, "big", queries, queries_n).await;
        let rss = tests::bench::rss_mb();
        let vm = s.memos.store.stats().unwrap().vectors_in_memory;
        s.stop().await;
        (lat, rss, vm)
    });
    drop(dir);
    r
}

/// Section 3: 100 cubes of 1000, with the default vector budget and a low one: (budget MB, latency,
/// vector codes in RAM, anonymous RSS MB) each.
fn many_cubes(
    rt: &tokio::runtime::Runtime,
    turns: &[String],
    queries: &[String],
    queries_n: usize,
) -> Vec<(usize, Latency, store::vecmem::VecMemStats, f64)> {
    let mut multi = Vec::new();
    for budget_mb in [512usize, 8] {
        let dir = tempfile::tempdir().unwrap();
        let r = rt.block_on(async {
        let mut cfg = hash_cfg(dir.path());
        cfg.search.vector_memory_mb = budget_mb;
        let s = hash_server(cfg).await;
        let items: Vec<(String, String)> = turns[..100_000]
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("cube-{}", i % 100), t.clone()))
            .collect();
        fill(&s, &items).await;
        // Touch every cube once (as a busy server would), then measure one.
        let client = reqwest::Client::new();
        for c in 0..100 {
            let r = client
                .post(format!("{}/product/search", s.url))
                .json(&json!({"query": "hello", "user_id": "u", "readable_cube_ids": [format!("cube-{c}")], "top_k": 10}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
        let lat = search_latency(&s, "cube-42", queries, queries_n).await;
        let vm = s.memos.store.stats().unwrap().vectors_in_memory;
        let rss = tests::bench::rss_anon_mb();
        s.stop().await;
        (budget_mb, lat, vm, rss)
    });
        multi.push(r);
    }
    multi
}

/// Section 4: Recall of the vector index against an exact scan on real MiniLM vectors.
fn recall_section(turns: &[String], queries: &[String], recall_n: usize, md: &mut String) {
    let emb = tests::embedder();
    let texts: Vec<String> = turns.iter().step_by(7).take(recall_n).cloned().collect();
    let t = Instant::now();
    let mut vecs = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(256) {
        vecs.extend(emb.embed(chunk).unwrap());
    }
    eprintln!(
        "embedded {} texts in {:.0} s",
        texts.len(),
        t.elapsed().as_secs_f64()
    );
    let qtexts: Vec<String> = queries.iter().take(200).cloned().collect();
    let qvecs = emb.embed(&qtexts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let st = store::Store::open(dir.path(), store::StoreOptions::default()).unwrap();
    let mut w = st.write_txn().unwrap();
    for (i, (text, v)) in texts.iter().zip(&vecs).enumerate() {
        st.insert(&mut w, &tests::bench::record(i, text.clone()), v)
            .unwrap();
    }
    st.commit(w).unwrap();
    st.index_pending().unwrap();
    let txn = st.read_txn().unwrap();
    let all = st.cube_ids(&txn, "bench").unwrap();
    let (mut hit_ram, mut hit_arroy, mut total) = (0usize, 0usize, 0usize);
    let (mut t_ram, mut t_arroy) = (Vec::new(), Vec::new());
    for q in &qvecs {
        let mut exact: Vec<(u32, f32)> = all
            .iter()
            .map(|id| (id, st.cosine(&txn, id, q).unwrap().unwrap()))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let truth: HashSet<u32> = exact[..10].iter().map(|e| e.0).collect();
        let t = Instant::now();
        let ram = st.vector_search_in(&txn, "bench", q, 10, &all).unwrap();
        t_ram.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let arroy = st.vector_search(&txn, q, 10, &all).unwrap();
        t_arroy.push(t.elapsed().as_secs_f64() * 1000.0);
        hit_ram += ram.iter().filter(|h| truth.contains(&h.0)).count();
        hit_arroy += arroy.iter().filter(|h| truth.contains(&h.0)).count();
        total += 10;
    }
    md.push_str(&format!(
    "| recall@10 vs exact scan, {} real MiniLM vectors (one cube), 200 LoCoMo-turn queries | recall@10 | p50 ms |\n|---|---:|---:|\n| RAM codes (sign-code shortlist → int8 → exact f32) | **{:.3}** | {:.2} |\n| arroy (oversampling 2), for comparison | {:.3} | {:.2} |\n",
    texts.len(),
    hit_ram as f64 / total as f64,
    tests::bench::pct(&mut t_ram, 0.5),
    hit_arroy as f64 / total as f64,
    tests::bench::pct(&mut t_arroy, 0.5),
));
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let queries_n = env("MEMOS_BENCH_QUERIES", 1000);
    let recall_n = env("MEMOS_BENCH_RECALL_VECTORS", 10_000);
    let turns = distinct_turns();
    eprintln!("{} distinct turns", turns.len());
    assert!(turns.len() >= 100_000, "need 100k distinct turns");
    let queries: Vec<String> = tests::bench::locomo_turns()
        .into_iter()
        .step_by(7)
        .take(500)
        .collect();
    let mut md = String::new();
    md.push_str(&format!(
        "Sink, search and vector index (`cargo build --profile bench --bin memos && cargo bench --workspace --bench sink`): bench profile (everything at opt-level 3, portable target-cpu; AVX2 kernels picked at run time), 2 cores, one run each, {}. Corpus: {} distinct real turns (Synthetic-Persona-Chat utterances, 2- and 3-utterance windows of one conversation, LoCoMo turns; mean {} characters). Embedding off = the hashed-trigram embedder.\n\n",
        chrono_date(),
        turns.len(),
        turns.iter().map(|t| t.len()).sum::<usize>() / turns.len(),
    ));

    let only = std::env::var("MEMOS_BENCH_ONLY").ok();
    let run = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));
    if run("ingest") {
        ingest_section(&turns, &mut md);
    }
    search_sections(&rt, &turns, &queries, queries_n, &run, &mut md);
    if run("recall") {
        recall_section(&turns, &queries, recall_n, &mut md);
    }
    print!("{md}");
    if only.is_none() {
        memos::eval::write_section(&tests::root().join("BENCHMARKS.md"), "sink", &md).unwrap();
    }
}

/// Sections 2 and 3: REST search latency in one big cube and in many cubes, and memory.
fn search_sections(
    rt: &tokio::runtime::Runtime,
    turns: &[String],
    queries: &[String],
    queries_n: usize,
    run: &dyn Fn(&str) -> bool,
    md: &mut String,
) {
    let one = run("one").then(|| one_cube(rt, turns, queries, queries_n));
    let multi = if run("many") {
        many_cubes(rt, turns, queries, queries_n)
    } else {
        Vec::new()
    };
    md.push_str("| REST search, embedding off, top_k 10 | p50 ms | p99 ms | `GET /health` p50 ms | p99 ms | vector codes in RAM |\n|---|---:|---:|---:|---:|---:|\n");
    if let Some((one, _, vm)) = &one {
        md.push_str(&format!(
            "| 100k memories in one cube | {:.2} | {:.2} | {:.2} | {:.2} | {} vectors, {:.1} MB |\n",
            one.0.0,
            one.0.1,
            one.1.0,
            one.1.1,
            vm.vectors,
            vm.bytes as f64 / 1048576.0
        ));
    }
    for (budget, lat, vm, _) in &multi {
        md.push_str(&format!(
            "| 1,000-memory cube of 100 cubes (100k memories), vector budget {budget} MB | {:.2} | {:.2} | {:.2} | {:.2} | {} cubes, {} vectors, {:.1} MB, {} evictions |\n",
            lat.0.0, lat.0.1, lat.1.0, lat.1.1, vm.cubes, vm.vectors, vm.bytes as f64 / 1048576.0, vm.evictions
        ));
    }
    if let (Some((_, rss_one, _)), [big, small]) = (&one, multi.as_slice()) {
        md.push_str(&format!(
            "\nResident memory: {rss_one:.0} MB RSS in the process holding the 100k-memory store and server (LMDB pages included); anonymous memory with a 512 MB vector budget {:.0} MB, with 8 MB {:.0} MB.\n\n",
            big.3, small.3
        ));
    }
}

fn chrono_date() -> String {
    store::time::micros_to_rfc3339(store::time::now_micros())[..10].to_string()
}
