//! The shape of a Llama-architecture model.

use serde::{Deserialize, Serialize};

use crate::error::{ActivationError, Result};

/// Hyper-parameters of a Llama-architecture causal LM (RMSNorm, rotary embeddings in the
/// Hugging Face "rotate half" layout, grouped-query attention, SiLU-gated MLP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Longest sequence the model (and a cache) may hold.
    pub max_positions: usize,
}

impl LlamaConfig {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Width of the key (and value) projection.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim()
    }

    /// Bytes one token takes in an f16 cache (keys and values of every layer).
    pub fn cache_bytes_per_token(&self) -> usize {
        self.num_layers * 2 * self.kv_dim() * 2
    }

    /// A tiny model for tests (random weights): 2 layers, 4 query heads over 2 KV heads.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 300,
            hidden_size: 64,
            intermediate_size: 160,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            max_positions: 512,
        }
    }

    /// Checks the shape is consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ActivationError::ModelFile(m));
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 {
            return bad("heads, KV heads and layers must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!(
                "hidden size {} is not a multiple of {} heads",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} query heads are not a multiple of {} KV heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head dim {} is odd", self.head_dim()));
        }
        if self.vocab_size == 0 || self.max_positions == 0 {
            return bad("vocabulary and max positions must be positive".into());
        }
        Ok(())
    }
}
