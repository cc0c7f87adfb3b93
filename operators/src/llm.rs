//! LLM client for any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, Ollama,
//! llama.cpp server, OpenAI, DashScope…).
//!
//! Several named models ([`LlmConfig::models`], MemOS `CHAT_MODEL_LIST`); per model a URL, key,
//! timeout, retries with exponential backoff (429, 5xx, timeouts, connection errors; honours
//! `Retry-After`), a concurrency limit, and token accounting reported to an [`LlmObserver`]
//! (the service turns it into metrics). [`LlmClient::complete_json`] asks for JSON mode and
//! validates the answer; malformed JSON is repaired ([`repair_json`]: code fences, prose around
//! the object, trailing commas, smart quotes) or rejected with the reason.
//! [`LlmClient::stream`] yields text deltas parsed from the server-sent events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::{OperatorError, Result};

/// One model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Name used by requests (`model_name_or_path`) and by the `chat`/`extract` settings.
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:8080/v1` (`/chat/completions` is appended).
    pub url: String,
    /// Model id sent to the server.
    pub model: String,
    /// Bearer key (empty: none).
    pub api_key: String,
    /// Per-request timeout.
    pub timeout_secs: u64,
    /// Retries after the first attempt for retryable failures.
    pub max_retries: u32,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Default `max_tokens`.
    pub max_tokens: u32,
    /// Default temperature.
    pub temperature: f32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            name: String::new(),
            url: String::new(),
            model: String::new(),
            api_key: String::new(),
            timeout_secs: 60,
            max_retries: 3,
            concurrency: 4,
            max_tokens: 1024,
            temperature: 0.2,
        }
    }
}

/// The `[llm]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Model used for chat when a request names none (empty: the first model).
    pub chat: String,
    /// Model used for fine extraction (empty: the chat model).
    pub extract: String,
    /// The models; none = no LLM (chat answers 503, fine mode behaves as fast).
    pub models: Vec<ModelConfig>,
}

/// Token and request accounting, reported after each request.
pub trait LlmObserver: Send + Sync {
    /// One finished request: model name, outcome (`ok`, `error`), seconds, token usage.
    fn observe(&self, model: &str, outcome: &str, seconds: f64, usage: &Usage);
}

/// Token usage of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Msg {
    /// system, user, assistant.
    pub role: String,
    /// Text.
    pub content: String,
}

impl Msg {
    /// A message.
    pub fn new(role: &str, content: impl Into<String>) -> Msg {
        Msg {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Per-request options (None: the model's defaults).
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// Maximum completion tokens.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Top-p.
    pub top_p: Option<f32>,
}

/// A finished completion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The answer text.
    pub text: String,
    /// Token usage (as the server reported it).
    pub usage: Usage,
}

/// The configured models.
#[derive(Clone, Default)]
pub struct Llm {
    models: BTreeMap<String, Arc<LlmClient>>,
    chat: Option<String>,
    extract: Option<String>,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl LlmConfig {
    /// Builds the clients; a model without url or model id is a configuration error.
    pub fn build(&self, observer: Option<Arc<dyn LlmObserver>>) -> Result<Llm> {
        let mut models = BTreeMap::new();
        for m in &self.models {
            if m.name.is_empty() || m.url.is_empty() || m.model.is_empty() {
                return Err(OperatorError::Invalid(format!(
                    "llm.models: every model needs name, url and model (got name {:?})",
                    m.name
                )));
            }
            models.insert(
                m.name.clone(),
                Arc::new(LlmClient::new(m.clone(), observer.clone())?),
            );
        }
        let pick = |want: &str| -> Result<Option<String>> {
            if want.is_empty() {
                return Ok(self.models.first().map(|m| m.name.clone()));
            }
            if models.contains_key(want) {
                Ok(Some(want.to_string()))
            } else {
                Err(OperatorError::Invalid(format!(
                    "llm: no model named {want:?}"
                )))
            }
        };
        let chat = pick(&self.chat)?;
        let extract = if self.extract.is_empty() {
            chat.clone()
        } else {
            pick(&self.extract)?
        };
        Ok(Llm {
            models,
            chat,
            extract,
        })
    }
}

impl Llm {
    /// Whether any model is configured.
    pub fn is_configured(&self) -> bool {
        !self.models.is_empty()
    }

    /// The chat model, or the one named (404-style error if unknown).
    pub fn chat_model(&self, name: Option<&str>) -> Result<Arc<LlmClient>> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => self
                .chat
                .clone()
                .ok_or_else(|| OperatorError::Remote("no LLM is configured".into()))?,
        };
        self.models.get(&name).cloned().ok_or_else(|| {
            OperatorError::Invalid(format!(
                "model {name:?} is not configured (have: {})",
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The extraction model, if any.
    pub fn extract_model(&self) -> Option<Arc<LlmClient>> {
        self.extract
            .as_ref()
            .and_then(|n| self.models.get(n).cloned())
    }

    /// Names of the configured models.
    pub fn names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }
}

/// One model's client.
pub struct LlmClient {
    cfg: ModelConfig,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    observer: Option<Arc<dyn LlmObserver>>,
}

/// Whether an HTTP status is worth retrying.
fn retryable_status(s: u16) -> bool {
    s == 429 || s == 408 || s >= 500
}

impl LlmClient {
    /// A client for one model.
    pub fn new(cfg: ModelConfig, observer: Option<Arc<dyn LlmObserver>>) -> Result<LlmClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
            .build()
            .map_err(|e| OperatorError::Remote(e.to_string()))?;
        Ok(LlmClient {
            slots: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg,
            http,
            observer,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Requests in flight at most.
    pub fn concurrency(&self) -> usize {
        self.cfg.concurrency.max(1)
    }

    fn body(&self, messages: &[Msg], o: &ChatOptions, stream: bool, json_mode: bool) -> Value {
        let mut b = json!({
            "model": self.cfg.model,
            "messages": messages,
            "max_tokens": o.max_tokens.unwrap_or(self.cfg.max_tokens),
            "temperature": o.temperature.unwrap_or(self.cfg.temperature),
            "stream": stream,
        });
        if let Some(p) = o.top_p {
            b["top_p"] = json!(p);
        }
        if stream {
            b["stream_options"] = json!({"include_usage": true});
        }
        if json_mode {
            b["response_format"] = json!({"type": "json_object"});
        }
        b
    }

    fn observe(&self, outcome: &str, t: Instant, usage: &Usage) {
        if let Some(o) = &self.observer {
            o.observe(&self.cfg.name, outcome, t.elapsed().as_secs_f64(), usage);
        }
    }

    /// Sends with retries; returns the successful response.
    async fn send(&self, body: &Value) -> Result<reqwest::Response> {
        let url = format!("{}/chat/completions", self.cfg.url.trim_end_matches('/'));
        let mut attempt = 0u32;
        loop {
            let mut req = self.http.post(&url).json(body);
            if !self.cfg.api_key.is_empty() {
                req = req.bearer_auth(&self.cfg.api_key);
            }
            let (err, wait) = match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = r.text().await.unwrap_or_default();
                    let msg = format!(
                        "{}: HTTP {status}: {}",
                        self.cfg.name,
                        text.chars().take(300).collect::<String>()
                    );
                    if !retryable_status(status) {
                        return Err(OperatorError::Invalid(msg));
                    }
                    (msg, after)
                }
                Err(e) => (format!("{}: {e}", self.cfg.name), None),
            };
            if attempt >= self.cfg.max_retries {
                return Err(OperatorError::Remote(format!(
                    "{err} (after {} attempts)",
                    attempt + 1
                )));
            }
            let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(5)));
            tokio::time::sleep(wait.unwrap_or(backoff).min(Duration::from_secs(10))).await;
            attempt += 1;
        }
    }

    /// One completion.
    pub async fn complete(&self, messages: &[Msg], o: &ChatOptions) -> Result<Completion> {
        self.complete_with(messages, o, false).await
    }

    async fn complete_with(
        &self,
        messages: &[Msg],
        o: &ChatOptions,
        json_mode: bool,
    ) -> Result<Completion> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| OperatorError::Remote(e.to_string()))?;
        let t = Instant::now();
        let r = async {
            let resp = self.send(&self.body(messages, o, false, json_mode)).await?;
            let v: Value = resp
                .json()
                .await
                .map_err(|e| OperatorError::Remote(format!("{}: reply: {e}", self.cfg.name)))?;
            let text = v
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    OperatorError::Invalid(format!(
                        "{}: reply has no choices[0].message.content",
                        self.cfg.name
                    ))
                })?
                .to_string();
            Ok(Completion {
                text,
                usage: usage_of(&v),
            })
        }
        .await;
        match &r {
            Ok(c) => self.observe("ok", t, &c.usage),
            Err(_) => self.observe("error", t, &Usage::default()),
        }
        r
    }

    /// A completion in JSON mode (`response_format: json_object`), unparsed.
    pub async fn complete_json_mode(
        &self,
        messages: &[Msg],
        o: &ChatOptions,
    ) -> Result<Completion> {
        self.complete_with(messages, o, true).await
    }

    /// A completion in JSON mode, parsed; malformed JSON is repaired or rejected with the reason.
    pub async fn complete_json(
        &self,
        messages: &[Msg],
        o: &ChatOptions,
    ) -> Result<(Value, Completion)> {
        let c = self.complete_with(messages, o, true).await?;
        let v = repair_json(&c.text).map_err(|why| {
            OperatorError::Invalid(format!("{}: malformed JSON ({why})", self.cfg.name))
        })?;
        Ok((v, c))
    }

    /// A streamed completion: text deltas as they arrive, then the usage (if the server sends
    /// it). The request is made before this returns, so connection and HTTP errors surface here.
    pub async fn stream(
        &self,
        messages: &[Msg],
        o: &ChatOptions,
    ) -> Result<mpsc::Receiver<Result<StreamItem>>> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| OperatorError::Remote(e.to_string()))?;
        let t = Instant::now();
        let mut resp = match self.send(&self.body(messages, o, true, false)).await {
            Ok(r) => r,
            Err(e) => {
                self.observe("error", t, &Usage::default());
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let name = self.cfg.name.clone();
        let observer = self.observer.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = String::new();
            let mut usage = Usage::default();
            let mut outcome = "ok";
            'read: loop {
                match resp.chunk().await {
                    Ok(Some(bytes)) => {
                        buf.push_str(&String::from_utf8_lossy(&bytes));
                        while let Some(end) = buf.find('\n') {
                            let line: String = buf.drain(..=end).collect();
                            let line = line.trim();
                            let Some(data) = line.strip_prefix("data:") else {
                                continue;
                            };
                            let data = data.trim();
                            if data == "[DONE]" {
                                break 'read;
                            }
                            let v: Value = match serde_json::from_str(data) {
                                Ok(v) => v,
                                Err(e) => {
                                    outcome = "error";
                                    let _ = tx
                                        .send(Err(OperatorError::Invalid(format!(
                                            "{name}: bad stream event: {e}"
                                        ))))
                                        .await;
                                    break 'read;
                                }
                            };
                            if v.get("usage").is_some_and(|u| !u.is_null()) {
                                usage = usage_of(&v);
                            }
                            if let Some(d) = v
                                .pointer("/choices/0/delta/content")
                                .and_then(Value::as_str)
                                .filter(|d| !d.is_empty())
                                && tx.send(Ok(StreamItem::Text(d.to_string()))).await.is_err()
                            {
                                break 'read;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        outcome = "error";
                        let _ = tx
                            .send(Err(OperatorError::Remote(format!("{name}: {e}"))))
                            .await;
                        break;
                    }
                }
            }
            let _ = tx.send(Ok(StreamItem::Done(usage))).await;
            if let Some(o) = observer {
                o.observe(&name, outcome, t.elapsed().as_secs_f64(), &usage);
            }
        });
        Ok(rx)
    }
}

/// What a stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A piece of the answer.
    Text(String),
    /// The end, with the usage the server reported.
    Done(Usage),
}

fn usage_of(v: &Value) -> Usage {
    Usage {
        prompt_tokens: v
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        completion_tokens: v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    }
}

/// Parses JSON an LLM wrote, repairing the usual damage: a ```json fence, prose before or
/// after the value, trailing commas, smart quotes. Returns the reason when it cannot.
pub fn repair_json(text: &str) -> std::result::Result<Value, String> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return Ok(v);
    }
    // Inside a code fence.
    let mut s = t.to_string();
    if let Some(start) = s.find("```") {
        let after = &s[start + 3..];
        let after = after.strip_prefix("json").unwrap_or(after);
        if let Some(end) = after.find("```") {
            s = after[..end].trim().to_string();
        }
    }
    // From the first opening bracket to its last closing one.
    let open = s
        .find(['{', '['])
        .ok_or("no JSON object or array in the reply")?;
    let close_char = if s[open..].starts_with('{') { '}' } else { ']' };
    let close = s.rfind(close_char).ok_or("the JSON value is not closed")?;
    if close < open {
        return Err("the JSON value is not closed".into());
    }
    let mut s = s[open..=close]
        .replace(['\u{201c}', '\u{201d}'], "\"")
        .replace(['\u{2018}', '\u{2019}'], "'");
    // Trailing commas before a closing bracket (outside strings).
    let mut out = String::with_capacity(s.len());
    let mut in_str = false;
    let mut esc = false;
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        if c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                continue;
            }
        }
        out.push(c);
    }
    s = out;
    serde_json::from_str::<Value>(&s).map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_common_damage() {
        assert_eq!(repair_json("{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert_eq!(
            repair_json("Sure! Here it is:\n```json\n{\"a\": [1, 2,],}\n```\nHope it helps")
                .unwrap(),
            json!({"a": [1, 2]})
        );
        assert_eq!(
            repair_json("result: {\u{201c}k\u{201d}: \"x, }\"}").unwrap(),
            json!({"k": "x, }"})
        );
        assert!(repair_json("no json here").is_err());
        assert!(repair_json("{\"a\": ").is_err());
    }
}
