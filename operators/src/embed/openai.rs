//! An embedder for any OpenAI-compatible `/v1/embeddings` endpoint (vLLM, Ollama, TEI, OpenAI…).
//!
//! The HTTP client lives on its own worker thread: a blocking client must never be created or
//! dropped inside an async runtime, and this embedder is owned by async code.

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::Embedder;
use crate::error::{OperatorError, Result};

type Job = (Vec<String>, mpsc::Sender<Result<Vec<Vec<f32>>>>);

/// Calls `POST {base_url}/embeddings` with `{"model", "input": [...]}`.
pub struct OpenAiEmbedder {
    jobs: Mutex<mpsc::Sender<Job>>,
    model: String,
    dims: usize,
}

#[derive(Deserialize)]
struct Resp {
    data: Vec<Item>,
}
#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

struct Worker {
    client: reqwest::blocking::Client,
    url: String,
    model: String,
    key: Option<String>,
    dims: usize,
    batch_size: usize,
}

impl OpenAiEmbedder {
    /// `base_url` such as `http://127.0.0.1:8080/v1`.
    pub fn new(
        base_url: &str,
        model: &str,
        key: Option<String>,
        dims: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let url = format!("{}/embeddings", base_url.trim_end_matches('/'));
        let model_name = model.to_string();
        std::thread::Builder::new()
            .name("memos-embed-http".into())
            .spawn(move || {
                let client = match reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
                {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(OperatorError::Remote(e.to_string())));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let w = Worker {
                    client,
                    url,
                    model: model_name,
                    key,
                    dims,
                    batch_size: 64,
                };
                // Ends when the embedder (the only sender) is dropped.
                while let Ok((texts, reply)) = rx.recv() {
                    let _ = reply.send(w.embed(&texts));
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| OperatorError::Remote("embedding worker did not start".into()))??;
        Ok(OpenAiEmbedder {
            jobs: Mutex::new(tx),
            model: model.to_string(),
            dims,
        })
    }
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

impl Worker {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            let mut req = self
                .client
                .post(&self.url)
                .json(&json!({"model": self.model, "input": chunk}));
            if let Some(k) = &self.key {
                req = req.bearer_auth(k);
            }
            let resp = req
                .send()
                .map_err(|e| OperatorError::Remote(e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.text().unwrap_or_default();
                let err = format!(
                    "{} from {}: {}",
                    status,
                    self.url,
                    body.chars().take(300).collect::<String>()
                );
                return Err(if status.is_server_error() || status.as_u16() == 429 {
                    OperatorError::Remote(err)
                } else {
                    OperatorError::Invalid(err)
                });
            }
            let mut r: Resp = resp
                .json()
                .map_err(|e| OperatorError::Remote(format!("bad response: {e}")))?;
            if r.data.len() != chunk.len() {
                return Err(OperatorError::Remote(format!(
                    "asked for {} embeddings, got {}",
                    chunk.len(),
                    r.data.len()
                )));
            }
            r.data.sort_by_key(|i| i.index.unwrap_or(0));
            for item in r.data {
                if item.embedding.len() != self.dims {
                    return Err(OperatorError::Remote(format!(
                        "embedding has {} dimensions, configured {}",
                        item.embedding.len(),
                        self.dims
                    )));
                }
                out.push(normalise(item.embedding));
            }
        }
        Ok(out)
    }
}

impl Embedder for OpenAiEmbedder {
    fn dimensions(&self) -> usize {
        self.dims
    }
    fn model_id(&self) -> &str {
        &self.model
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((texts.to_vec(), tx))
            .map_err(|_| OperatorError::Remote("embedding worker stopped".into()))?;
        rx.recv()
            .map_err(|_| OperatorError::Remote("embedding worker stopped".into()))?
    }
}
