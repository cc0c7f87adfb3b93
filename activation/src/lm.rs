//! A local causal LM: tokenizer, CPU reference model, optional CUDA prefill, the chat prompt
//! layout that makes a memory prefix reusable, and greedy generation on top of a cached prefix.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::cache::KvCache;
use crate::config::LlamaConfig;
use crate::cpu::{CpuModel, argmax};
use crate::cuda::CudaModel;
use crate::error::{ActivationError, Result};

/// Where prefill runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevicePref {
    /// CUDA when a driver and device exist, else the CPU (with a log line).
    Auto,
    /// Always the CPU reference.
    Cpu,
    /// CUDA; falls back to the CPU with a warning when unavailable.
    Cuda,
}

/// A loaded model with its tokenizer.
pub struct LocalLm {
    cpu: CpuModel,
    cuda: Option<CudaModel>,
    tokenizer: Tokenizer,
    /// Identifies the weights.
    pub model_id: String,
    /// Identifies the tokenizer.
    pub tokenizer_hash: String,
    stop_ids: Vec<u32>,
    special: HashMap<String, u32>,
}

/// What one generation produced.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Decoded text of the new tokens.
    pub text: String,
    /// New token ids.
    pub tokens: Vec<u32>,
    /// Tokens prefilled for this request (those not covered by the cached prefix).
    pub prompt_tokens: usize,
    /// Tokens reused from the cached prefix.
    pub cached_tokens: usize,
    /// Time to the first new token.
    pub ttft: Duration,
}

/// Hash of a composed prefix for a model: what decides whether a stored cache is current.
pub fn text_hash(model_id: &str, tokenizer_hash: &str, text: &str) -> String {
    let mut h = Sha256::new();
    for p in [model_id, tokenizer_hash, text] {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// The memory prefix in ChatML (SmolLM2's chat template): an open system turn listing the
/// memories. The cache covers exactly these tokens; [`chat_suffix`] closes the turn.
pub fn chat_prefix(system: &str, memories: &[String]) -> String {
    let mut s = format!("<|im_start|>system\n{system}\n");
    if !memories.is_empty() {
        s.push_str("\nMemories:\n");
        for m in memories {
            s.push_str("- ");
            s.push_str(&m.replace('\n', " "));
            s.push('\n');
        }
    }
    s
}

/// What follows the memory prefix: `extra` system text (e.g. the time and memories retrieved
/// for this question), the end of the system turn, the conversation so far (`(role, content)`
/// pairs) and the opening of the assistant turn.
pub fn chat_suffix(extra: &str, turns: &[(String, String)]) -> String {
    let mut s = String::from(extra);
    s.push_str("<|im_end|>\n");
    for (role, content) in turns {
        s.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

impl LocalLm {
    /// Loads a GGUF model; prefill runs where `device` says.
    pub fn load(path: &Path, device: DevicePref) -> Result<Self> {
        let g = crate::gguf::load(path)?;
        let cuda = match device {
            DevicePref::Cpu => None,
            DevicePref::Auto | DevicePref::Cuda => {
                if crate::cuda::available() {
                    match CudaModel::new(&g.weights) {
                        Ok(m) => {
                            tracing::info!("activation: prefill runs on CUDA");
                            Some(m)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "activation: CUDA failed to start; prefill runs on the CPU");
                            None
                        }
                    }
                } else {
                    if device == DevicePref::Cuda {
                        tracing::warn!(
                            "activation: no CUDA driver or device; prefill runs on the CPU"
                        );
                    } else {
                        tracing::info!(
                            "activation: no CUDA driver or device; prefill runs on the CPU"
                        );
                    }
                    None
                }
            }
        };
        let stop_ids = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| g.special.get(*t).copied())
            .chain(g.eos_id)
            .collect();
        Ok(Self {
            cpu: CpuModel::new(g.weights)?,
            cuda,
            tokenizer: g.tokenizer,
            model_id: g.model_id,
            tokenizer_hash: g.tokenizer_hash,
            stop_ids,
            special: g.special,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        self.cpu.config()
    }

    /// The CPU reference model.
    pub fn cpu(&self) -> &CpuModel {
        &self.cpu
    }

    /// The CUDA model, when prefill runs on a GPU.
    pub fn cuda(&self) -> Option<&CudaModel> {
        self.cuda.as_ref()
    }

    /// Ids of control tokens by text.
    pub fn special_tokens(&self) -> &HashMap<String, u32> {
        &self.special
    }

    /// Token ids of `text` (control tokens written in it map to their ids; no BOS is added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ActivationError::Tokenizer(e.to_string()))?;
        Ok(e.get_ids().to_vec())
    }

    /// Text of `ids` (control tokens dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ActivationError::Tokenizer(e.to_string()))
    }

    /// The KV cache of `tokens` — on CUDA when available, else on the CPU.
    pub fn prefill(&self, tokens: &[u32]) -> Result<KvCache> {
        if let Some(g) = &self.cuda {
            return Ok(g.prefill(tokens)?.0);
        }
        Ok(self.cpu.prefill(tokens)?.0)
    }

    /// Greedy generation of up to `max_new` tokens after `prompt`, reusing `prefix` (a cache
    /// of the tokens before `prompt`) when given. Stops at the end-of-turn tokens.
    pub fn generate(
        &self,
        prefix: Option<&KvCache>,
        prompt: &[u32],
        max_new: usize,
        mut on_token: impl FnMut(&str),
    ) -> Result<Generation> {
        let start = Instant::now();
        let mut cache = match prefix {
            Some(c) => c.clone(),
            None => KvCache::new(self.config().num_layers),
        };
        let cached_tokens = cache.len;
        let room = self
            .config()
            .max_positions
            .saturating_sub(cache.len + prompt.len());
        let max_new = max_new.min(room);
        let mut logits = self.cpu.forward(prompt, &mut cache, false)?;
        let mut next = argmax(&logits)?;
        let ttft = start.elapsed();
        let mut out: Vec<u32> = Vec::new();
        let mut emitted = 0usize;
        while out.len() < max_new && !self.stop_ids.contains(&next) {
            out.push(next);
            // Stream whole characters: decode everything so far and send what is new.
            let text = self.decode(&out)?;
            if !text.ends_with('\u{FFFD}')
                && let Some(new) = text.get(emitted..).filter(|t| !t.is_empty())
            {
                on_token(new);
                emitted = text.len();
            }
            if out.len() == max_new {
                break;
            }
            logits = self.cpu.forward(&[next], &mut cache, false)?;
            next = argmax(&logits)?;
        }
        let text = self.decode(&out)?;
        if let Some(new) = text.get(emitted..).filter(|t| !t.is_empty()) {
            on_token(new);
        }
        Ok(Generation {
            text,
            tokens: out,
            prompt_tokens: prompt.len(),
            cached_tokens,
            ttft,
        })
    }
}
