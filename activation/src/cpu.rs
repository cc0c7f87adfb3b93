//! The CPU reference forward pass, in candle (vendored: candle-transformers keeps its Llama
//! cache private, and the operator needs every layer's keys and values).

use candle_core::{D, Device, Tensor};

pub use crate::cache::max_abs_diff;
use crate::cache::{KvCache, LayerKv};
use crate::config::LlamaConfig;
use crate::error::{ActivationError, Result};
use crate::weights::Weights;

/// RoPE tables `[max_positions, head_dim / 2]` (cos, sin), computed in f64 and rounded to f32 so
/// the CPU and CUDA paths use the very same numbers.
pub fn rope_tables(config: &LlamaConfig) -> (Vec<f32>, Vec<f32>) {
    let half = config.head_dim() / 2;
    let mut cos = Vec::with_capacity(config.max_positions * half);
    let mut sin = Vec::with_capacity(config.max_positions * half);
    for p in 0..config.max_positions {
        for i in 0..half {
            let inv =
                1.0 / (config.rope_theta as f64).powf(2.0 * i as f64 / config.head_dim() as f64);
            let a = p as f64 * inv;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// A Llama model running on the CPU.
#[derive(Debug, Clone)]
pub struct CpuModel {
    weights: Weights,
    cos: Tensor,
    sin: Tensor,
}

impl CpuModel {
    /// Wraps `weights`.
    pub fn new(weights: Weights) -> Result<Self> {
        weights.config.validate()?;
        let c = &weights.config;
        let (cos, sin) = rope_tables(c);
        let half = c.head_dim() / 2;
        Ok(Self {
            cos: Tensor::from_vec(cos, (c.max_positions, half), &Device::Cpu)?,
            sin: Tensor::from_vec(sin, (c.max_positions, half), &Device::Cpu)?,
            weights,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.weights.config
    }

    /// The weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Runs `tokens` after the prefix held in `cache`, appending their keys and values to it.
    /// Returns logits `[tokens, vocab]` when `all_logits`, else `[1, vocab]` for the last token.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        let c = &self.weights.config;
        let n = tokens.len();
        let offset = cache.len;
        check_tokens(c, tokens, offset)?;
        if cache.layers.len() != c.num_layers {
            return Err(ActivationError::Cache(format!(
                "cache has {} layers, the model {}",
                cache.layers.len(),
                c.num_layers
            )));
        }
        let hd = c.head_dim();
        let rep = c.num_heads / c.num_kv_heads;
        let total = offset + n;
        let ids = Tensor::from_vec(tokens.to_vec(), n, &Device::Cpu)?;
        let mut x = self.weights.embed.index_select(&ids, 0)?;
        let cos = self.cos.narrow(0, offset, n)?;
        let sin = self.sin.narrow(0, offset, n)?;
        let mask = causal_mask(n, offset)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for (li, w) in self.weights.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &w.attn_norm, c.rms_eps)?;
            let q = h.matmul(&w.wq.t()?)?;
            let k = h.matmul(&w.wk.t()?)?;
            let v = h.matmul(&w.wv.t()?)?;
            // [n, heads·hd] → [1, heads, n, hd]
            let q = q
                .reshape((n, c.num_heads, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?;
            let k = k
                .reshape((n, c.num_kv_heads, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?;
            let v = v
                .reshape((n, c.num_kv_heads, hd))?
                .transpose(0, 1)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?.squeeze(0)?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?.squeeze(0)?;
            let (k, v) = match cache.layers[li].take() {
                Some(prev) => (
                    Tensor::cat(&[&prev.k, &k], 1)?,
                    Tensor::cat(&[&prev.v, &v], 1)?,
                ),
                None => (k, v),
            };
            // Grouped-query attention: query heads g·rep .. (g+1)·rep share KV head g.
            let kx = k
                .unsqueeze(1)?
                .expand((c.num_kv_heads, rep, total, hd))?
                .reshape((c.num_heads, total, hd))?;
            let vx = v
                .unsqueeze(1)?
                .expand((c.num_kv_heads, rep, total, hd))?
                .reshape((c.num_heads, total, hd))?;
            let scores = (q.matmul(&kx.t()?)? * scale)?.broadcast_add(&mask)?;
            let p = candle_nn::ops::softmax_last_dim(&scores)?;
            let o = p
                .matmul(&vx)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((n, c.hidden_size))?;
            x = (x + o.matmul(&w.wo.t()?)?)?;
            cache.layers[li] = Some(LayerKv { k, v });
            let h = candle_nn::ops::rms_norm(&x, &w.ffn_norm, c.rms_eps)?;
            let g = candle_nn::ops::silu(&h.matmul(&w.w_gate.t()?)?)?;
            let u = h.matmul(&w.w_up.t()?)?;
            x = (x + (g * u)?.matmul(&w.w_down.t()?)?)?;
        }
        cache.len = total;
        let x = if all_logits {
            x
        } else {
            x.narrow(0, n - 1, 1)?
        };
        let x = candle_nn::ops::rms_norm(&x, &self.weights.final_norm, c.rms_eps)?;
        Ok(x.matmul(&self.weights.lm_head.t()?)?)
    }

    /// Fills a fresh cache with `tokens` (the prefill), returning it and the last logits.
    pub fn prefill(&self, tokens: &[u32]) -> Result<(KvCache, Tensor)> {
        let mut cache = KvCache::new(self.config().num_layers);
        let logits = self.forward(tokens, &mut cache, false)?;
        Ok((cache, logits))
    }
}

/// Rejects empty input, ids outside the vocabulary and sequences past `max_positions`.
pub fn check_tokens(c: &LlamaConfig, tokens: &[u32], offset: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(ActivationError::Invalid("no tokens".into()));
    }
    if offset + tokens.len() > c.max_positions {
        return Err(ActivationError::Invalid(format!(
            "{} tokens after a {offset}-token prefix exceed the model's {} positions",
            tokens.len(),
            c.max_positions
        )));
    }
    if let Some(t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
        return Err(ActivationError::Invalid(format!(
            "token id {t} is outside the vocabulary ({})",
            c.vocab_size
        )));
    }
    Ok(())
}

/// `[n, offset + n]`: 0 where query `i` (at position `offset + i`) may see key `j`, −∞ after.
fn causal_mask(n: usize, offset: usize) -> Result<Tensor> {
    let total = offset + n;
    let m: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (n, total), &Device::Cpu)?)
}

/// Index of the largest logit in a `[1, vocab]` or `[vocab]` tensor.
pub fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits
        .flatten_all()?
        .argmax(D::Minus1)?
        .to_scalar::<u32>()?)
}
