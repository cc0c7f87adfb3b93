//! Broker ingest and request-reply benchmarks (writes the `bus` section of BENCHMARKS.md):
//!
//! - events/s from a JetStream backlog and from a Kafka (tansu) backlog into the store, with
//!   embedding off (the hashed-trigram embedder: no model) and with the real model, against the
//!   model's own throughput on the same texts;
//! - resident memory while a large backlog drains (bounded queues keep it flat);
//! - search latency over NATS request-reply against the same search in process.
//!
//! `cargo bench --profile dev -p benches --bench bus`. `MEMOS_BENCH_BUS_EVENTS` (default
//! 200000) sizes the embedding-off backlogs, `MEMOS_BENCH_BUS_MODEL_EVENTS` (default 1500) the
//! real-model ones, `MEMOS_BENCH_QUERIES` (default 300) the request-reply run. Needs NATS on
//! 127.0.0.1:4222 and tansu 0.6.0.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use server::auth::Principal;

use tests::bench::env;

fn corpus() -> Vec<String> {
    tests::bench::locomo_turns()
}

fn event(i: usize, texts: &[String]) -> (String, Vec<u8>) {
    let cube = format!("bench-{}", i % 16);
    let e = json!({"event_id": format!("e{i}"), "kind": "messages", "cube_id": cube, "user_id": "u",
        "session_id": format!("s{}", i / 20),
        "payload": {"messages": [{"role": "user", "content": format!("{} (#{i})", texts[i % texts.len()])}]}});
    (cube, e.to_string().into_bytes())
}

struct Run {
    events: usize,
    secs: f64,
    rss_start: f64,
    rss_max: f64,
    rss_end: f64,
}

/// Starts a server over `cfg` and waits until `n` events are processed.
async fn drain(cfg: server::Config, n: usize) -> (Run, tests::Server) {
    let rss_start = tests::bench::rss_anon_mb();
    let t = Instant::now();
    let store =
        std::sync::Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    let embedder = server::service::load_embedder(&cfg).unwrap();
    let s = tests::Server::start_with_parts(cfg, store, embedder).await;
    let mut rss_max = rss_start;
    loop {
        let st = s.memos.store.stats().unwrap();
        rss_max = rss_max.max(tests::bench::rss_anon_mb());
        if st.events as usize + st.dead_letters as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    (
        Run {
            events: n,
            secs,
            rss_start,
            rss_max,
            rss_end: tests::bench::rss_anon_mb(),
        },
        s,
    )
}

async fn fill_nats(url: &str, subject_prefix: &str, n: usize, texts: &[String]) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut acks = Vec::with_capacity(1024);
    for i in 0..n {
        let (cube, body) = event(i, texts);
        acks.push(
            js.publish(format!("{subject_prefix}.events.{cube}"), Bytes::from(body))
                .await
                .unwrap(),
        );
        if acks.len() == 1024 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

async fn fill_kafka(brokers: &str, topic: &str, n: usize, texts: &[String]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for i in 0..n {
        let (cube, body) = event(i, texts);
        let p2 = p.clone();
        let topic = topic.to_string();
        pending.push(async move {
            p2.send(
                FutureRecord::to(&topic).key(&cube).payload(&body),
                Duration::from_secs(60),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        });
        if pending.len() >= 2000 {
            pending.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = pending.next().await {
        r.unwrap();
    }
}

fn nats_cfg(dir: &std::path::Path, hash: bool) -> (server::Config, String) {
    let mut cfg = tests::config(dir);
    if hash {
        cfg.embedder.kind = "hash".into();
    }
    cfg.pipeline.linger_ms = 20;
    let p = tests::nats_config(&mut cfg);
    (cfg, p)
}

async fn create_stream(url: &str, p: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: format!("{}_EVENTS", p.to_uppercase()),
        subjects: vec![format!("{p}.events.>")],
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn delete_stream(url: &str, p: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let _ = js
        .delete_stream(format!("{}_EVENTS", p.to_uppercase()))
        .await;
}

/// Counts deliveries and acknowledges them at once: the connectors' own ceiling.
struct NullIngest {
    n: std::sync::atomic::AtomicUsize,
}

impl connectors::Ingest for NullIngest {
    type Receipt = std::future::Ready<connectors::Ack>;

    async fn submit(
        &self,
        _d: connectors::Delivery,
    ) -> Result<Self::Receipt, connectors::ConnectorError> {
        self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(std::future::ready(connectors::Ack::Stored))
    }
}

struct NullSearch;

impl connectors::Search for NullSearch {
    async fn search(&self, _call: connectors::SearchCall) -> Bytes {
        Bytes::from_static(b"{}")
    }
}

/// Drains a backlog through a connector into [`NullIngest`]; returns events/s.
async fn connector_ceiling(
    n: usize,
    run: impl FnOnce(
        std::sync::Arc<NullIngest>,
        tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()>,
) -> f64 {
    let ingest = std::sync::Arc::new(NullIngest {
        n: std::sync::atomic::AtomicUsize::new(0),
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let h = run(ingest.clone(), rx);
    while ingest.n.load(std::sync::atomic::Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = tx.send(true);
    let _ = h.await;
    rate
}

/// The connectors alone (no pipeline): what the bus side can deliver, events/s (NATS, Kafka).
async fn ceilings(nats_url: &str, texts: &[String], n_fast: usize) -> (f64, f64) {
    // The connectors alone (no pipeline): what the bus side can deliver.
    let nats = {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, p) = nats_cfg(dir.path(), true);
        create_stream(nats_url, &p).await;
        fill_nats(nats_url, &p, n_fast, texts).await;
        let nc = cfg.nats.clone();
        let r = connector_ceiling(n_fast, move |ing, stop| {
            tokio::spawn(async move {
                let _ = connectors::nats::run(nc, ing, std::sync::Arc::new(NullSearch), stop).await;
            })
        })
        .await;
        delete_stream(nats_url, &p).await;
        r
    };
    let kafka = {
        let broker = tests::Tansu::start();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = tests::config(dir.path());
        let p = tests::kafka_config(&mut cfg, &broker.brokers, 4);
        connectors::kafka::create_topics(&cfg.kafka).await.unwrap();
        fill_kafka(&broker.brokers, &format!("{p}.events"), n_fast, texts).await;
        let kc = cfg.kafka.clone();
        connector_ceiling(n_fast, move |ing, stop| {
            tokio::spawn(async move {
                let _ = connectors::kafka::run(
                    kc,
                    ing,
                    std::sync::Arc::new(NullSearch),
                    std::sync::Arc::default(),
                    stop,
                )
                .await;
            })
        })
        .await
    };

    (nats, kafka)
}

/// A sustained backlog: publish it all, then drain for a fixed window and watch memory; the
/// report's paragraph.
async fn backlog_row(nats_url: &str, texts: &[String]) -> String {
    let backlog = env("MEMOS_BENCH_BUS_BACKLOG", 1_000_000);
    let window = Duration::from_secs(env("MEMOS_BENCH_BUS_WINDOW_SECS", 60) as u64);

    let dir = tempfile::tempdir().unwrap();
    let (cfg, p) = nats_cfg(dir.path(), true);
    create_stream(nats_url, &p).await;
    let t = Instant::now();
    fill_nats(nats_url, &p, backlog, texts).await;
    let publish_secs = t.elapsed().as_secs_f64();
    let store =
        std::sync::Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    let embedder = server::service::load_embedder(&cfg).unwrap();
    let s = tests::Server::start_with_parts(cfg, store, embedder).await;
    let t = Instant::now();
    let mut samples = Vec::new();
    while t.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(tests::bench::rss_anon_mb());
    }
    let drained = s.memos.store.stats().unwrap().events;
    s.stop().await;
    delete_stream(nats_url, &p).await;
    let (lo, hi) = samples
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), x| (a.min(*x), b.max(*x)));
    let (first, last) = (samples[0], *samples.last().unwrap());
    format!(
        "\nSustained backlog: {backlog} events published to JetStream ({:.0}/s), then drained for {} s ({drained} events stored, embedding off): anonymous RSS sampled every second stayed within {lo:.0}-{hi:.0} MB (first {first:.0}, last {last:.0}) — the bounded pipeline queue ({} events) and `max_in_flight` ({}) cap what the process holds; the backlog waits in the broker.\n",
        backlog as f64 / publish_secs,
        window.as_secs(),
        2048,
        4096
    )
}

/// Ingest through each broker, with embedding off and with the model.
async fn broker_rows(
    nats_url: &str,
    texts: &[String],
    n_fast: usize,
    n_model: usize,
) -> Vec<(&'static str, &'static str, Run)> {
    let mut rows = Vec::new();
    // NATS, embedding off, large backlog.
    for (label, hash, n) in [
        ("embedding off", true, n_fast),
        ("all-MiniLM-L6-v2", false, n_model),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, p) = nats_cfg(dir.path(), hash);
        create_stream(nats_url, &p).await;
        fill_nats(nats_url, &p, n, texts).await;
        let (r, s) = drain(cfg, n).await;
        s.stop().await;
        delete_stream(nats_url, &p).await;
        rows.push(("NATS JetStream", label, r));
    }
    // Kafka (tansu), same.
    for (label, hash, n) in [
        ("embedding off", true, n_fast),
        ("all-MiniLM-L6-v2", false, n_model),
    ] {
        let broker = tests::Tansu::start();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = tests::config(dir.path());
        if hash {
            cfg.embedder.kind = "hash".into();
        }
        let p = tests::kafka_config(&mut cfg, &broker.brokers, 4);
        connectors::kafka::create_topics(&cfg.kafka).await.unwrap();
        fill_kafka(&broker.brokers, &format!("{p}.events"), n, texts).await;
        let (r, s) = drain(cfg, n).await;
        s.stop().await;
        rows.push(("Kafka (tansu)", label, r));
    }

    rows
}

/// Search latency in process and over NATS request-reply on a real-model store (ms each).
async fn bus_latency(
    nats_url: &str,
    texts: &[String],
    n_model: usize,
    n_queries: usize,
) -> (Vec<f64>, Vec<f64>, usize) {
    // Request-reply latency over NATS vs in process, on a real-model store.
    let dir = tempfile::tempdir().unwrap();
    let (cfg, p) = nats_cfg(dir.path(), false);
    create_stream(nats_url, &p).await;
    fill_nats(nats_url, &p, n_model, texts).await;
    let (_, s) = drain(cfg, n_model).await;
    let client = async_nats::connect(nats_url).await.unwrap();
    let questions: Vec<String> = texts.iter().step_by(11).take(n_queries).cloned().collect();
    let req = |q: &str, cube: usize| json!({"query": q, "user_id": "u", "readable_cube_ids": [format!("bench-{cube}")], "top_k": 10});
    let local = Principal::local();
    for (i, q) in questions.iter().take(20).enumerate() {
        let r: server::api::SearchRequest = serde_json::from_value(req(q, i % 16)).unwrap();
        s.memos.search(&r, &local).await.unwrap();
        client
            .request(
                format!("{p}.search"),
                Bytes::from(req(q, i % 16).to_string()),
            )
            .await
            .unwrap();
    }
    let (mut direct, mut bus) = (Vec::new(), Vec::new());
    for (i, q) in questions.iter().enumerate() {
        let r: server::api::SearchRequest = serde_json::from_value(req(q, i % 16)).unwrap();
        let t = Instant::now();
        s.memos.search(&r, &local).await.unwrap();
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let m = client
            .request(
                format!("{p}.search"),
                Bytes::from(req(q, i % 16).to_string()),
            )
            .await
            .unwrap();
        bus.push(t.elapsed().as_secs_f64() * 1e3);
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["code"], 200);
    }
    s.stop().await;
    delete_stream(nats_url, &p).await;

    (direct, bus, questions.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n_fast = env("MEMOS_BENCH_BUS_EVENTS", 200_000);
    let n_model = env("MEMOS_BENCH_BUS_MODEL_EVENTS", 1500);
    let n_queries = env("MEMOS_BENCH_QUERIES", 300);
    let texts = corpus();
    let nats_url = "nats://127.0.0.1:4222".to_string();

    // The model's own throughput on the same texts (batch 32, like the pipeline).
    let model = tests::embedder();
    let sample: Vec<String> = (0..n_model)
        .map(|i| format!("{} (#{i})", texts[i % texts.len()]))
        .collect();
    let t = Instant::now();
    for c in sample.chunks(256) {
        model.embed(c).unwrap();
    }
    let model_rate = n_model as f64 / t.elapsed().as_secs_f64();

    let (ceiling_nats, ceiling_kafka) = ceilings(&nats_url, &texts, n_fast).await;
    let backlog_row = backlog_row(&nats_url, &texts).await;
    let rows = broker_rows(&nats_url, &texts, n_fast, n_model).await;
    let (mut direct, mut bus, n_asked) = bus_latency(&nats_url, &texts, n_model, n_queries).await;

    let mut md = format!(
        "Broker ingest (`cargo bench --profile dev -p benches --bench bus`): a backlog published before the server starts, drained into the store (events/s from server start to the last commit; 16 cubes, LoCoMo turns). \"embedding off\" = the hashed-trigram embedder (no model). The model alone embeds these texts at **{model_rate:.0}/s** (batches of 256, sorted into token-budget batches as the pipeline does).\n\n\
| broker | embedder | events | events/s | vs model alone | anonymous RSS start → max → end (MB) |\n|---|---|---|---|---|---|\n"
    );
    for (b, label, r) in &rows {
        let rate = r.events as f64 / r.secs;
        let vs = if label.starts_with("all-") {
            format!("{:.0} %", 100.0 * rate / model_rate)
        } else {
            "—".into()
        };
        md.push_str(&format!(
            "| {b} | {label} | {} | {rate:.0} | {vs} | {:.0} → {:.0} → {:.0} |\n",
            r.events, r.rss_start, r.rss_max, r.rss_end
        ));
    }
    md.push_str(&format!(
        "| NATS JetStream | connector alone (acknowledged without the pipeline) | {n_fast} | {ceiling_nats:.0} | — | |\n| Kafka (tansu) | connector alone | {n_fast} | {ceiling_kafka:.0} | — | |\n"
    ));
    md.push_str(&backlog_row);
    let (d50, d99) = (
        tests::bench::pct(&mut direct, 0.5),
        tests::bench::pct(&mut direct, 0.99),
    );
    let (b50, b99) = (
        tests::bench::pct(&mut bus, 0.5),
        tests::bench::pct(&mut bus, 0.99),
    );
    md.push_str(&format!(
        "\nSearch over NATS request-reply ({} queries, top_k 10, real query embedding, {n_model} memories in 16 cubes):\n\n\
| path | p50 ms | p99 ms |\n|---|---|---|\n| in process (`Memos::search`) | {d50:.2} | {d99:.2} |\n| NATS request-reply (`memos.search`) | {b50:.2} | {b99:.2} |\n| added by the bus | {:.2} | |\n",
        n_asked,
        b50 - d50
    ));
    println!("{md}");
    memos::eval::write_section(&tests::root().join("BENCHMARKS.md"), "bus", &md).unwrap();
}
