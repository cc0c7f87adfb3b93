//! Model weights, held as f32 tensors on the CPU (the CUDA path uploads copies).

use candle_core::{Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::Result;

/// One transformer block's weights; matrices are `[out, in]` like PyTorch's `nn.Linear`.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// RMSNorm before attention, `[hidden]`.
    pub attn_norm: Tensor,
    /// Query projection, `[heads·head_dim, hidden]`.
    pub wq: Tensor,
    /// Key projection, `[kv_heads·head_dim, hidden]`.
    pub wk: Tensor,
    /// Value projection, `[kv_heads·head_dim, hidden]`.
    pub wv: Tensor,
    /// Output projection, `[hidden, heads·head_dim]`.
    pub wo: Tensor,
    /// RMSNorm before the MLP, `[hidden]`.
    pub ffn_norm: Tensor,
    /// Gate projection, `[intermediate, hidden]`.
    pub w_gate: Tensor,
    /// Up projection, `[intermediate, hidden]`.
    pub w_up: Tensor,
    /// Down projection, `[hidden, intermediate]`.
    pub w_down: Tensor,
}

/// All of a model's weights.
#[derive(Debug, Clone)]
pub struct Weights {
    /// The model's shape.
    pub config: LlamaConfig,
    /// Token embeddings, `[vocab, hidden]`.
    pub embed: Tensor,
    /// The blocks.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm, `[hidden]`.
    pub final_norm: Tensor,
    /// Output head, `[vocab, hidden]` (the embeddings when tied).
    pub lm_head: Tensor,
    /// Whether the output head is the embedding matrix.
    pub tied: bool,
}

/// A small deterministic generator (splitmix64) so random models are the same everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn tensor(&mut self, rows: usize, cols: usize, scale: f32) -> Result<Tensor> {
        let v: Vec<f32> = (0..rows * cols).map(|_| self.next_f32() * scale).collect();
        Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
    }

    fn norm(&mut self, n: usize) -> Result<Tensor> {
        let v: Vec<f32> = (0..n).map(|_| 1.0 + 0.1 * self.next_f32()).collect();
        Ok(Tensor::from_vec(v, n, &Device::Cpu)?)
    }
}

impl Weights {
    /// Random weights for `config` from `seed` (uniform, scaled like a trained model's so
    /// activations stay in a realistic range).
    pub fn random(config: &LlamaConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut r = SplitMix(seed);
        let h = config.hidden_size;
        let kv = config.kv_dim();
        let i = config.intermediate_size;
        let sh = 1.0 / (h as f32).sqrt() * 1.7;
        let si = 1.0 / (i as f32).sqrt() * 1.7;
        let embed = r.tensor(config.vocab_size, h, 1.0)?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for _ in 0..config.num_layers {
            layers.push(LayerWeights {
                attn_norm: r.norm(h)?,
                wq: r.tensor(h, h, sh)?,
                wk: r.tensor(kv, h, sh)?,
                wv: r.tensor(kv, h, sh)?,
                wo: r.tensor(h, h, sh)?,
                ffn_norm: r.norm(h)?,
                w_gate: r.tensor(i, h, sh)?,
                w_up: r.tensor(i, h, sh)?,
                w_down: r.tensor(h, i, si)?,
            });
        }
        let final_norm = r.norm(h)?;
        let lm_head = r.tensor(config.vocab_size, h, sh)?;
        Ok(Self {
            config: config.clone(),
            embed,
            layers,
            final_norm,
            lm_head,
            tied: false,
        })
    }

    /// Parameters in the model.
    pub fn parameter_count(&self) -> usize {
        let mut n = self.embed.elem_count() + self.final_norm.elem_count();
        if !self.tied {
            n += self.lm_head.elem_count();
        }
        for l in &self.layers {
            for t in [
                &l.attn_norm,
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.ffn_norm,
                &l.w_gate,
                &l.w_up,
                &l.w_down,
            ] {
                n += t.elem_count();
            }
        }
        n
    }
}
