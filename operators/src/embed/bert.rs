//! A small BERT encoder (the all-MiniLM-L6-v2 architecture) on candle.
//!
//! Vendored rather than taken from candle-transformers to keep the build small; it implements
//! exactly what sentence-transformers' BertModel does for inference: word + position + token-type
//! embeddings, post-LayerNorm encoder layers with exact (erf) GELU, no pooler.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};
use serde::Deserialize;

/// The fields of `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size (384 for MiniLM-L6).
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// Maximum positions.
    pub max_position_embeddings: usize,
    /// Token types.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

struct Layer {
    /// Query, key and value projections fused into one matrix (one matmul instead of three).
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// The encoder.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    device: Device,
}

impl Bert {
    /// Loads weights named as in the Hugging Face checkpoint (`embeddings.*`, `encoder.layer.N.*`).
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let ln = |vb: VarBuilder| layer_norm(h, cfg.layer_norm_eps, vb);
        let e = vb.pp("embeddings");
        let embeddings = Embeddings {
            word: embedding(cfg.vocab_size, h, e.pp("word_embeddings"))?,
            position: embedding(cfg.max_position_embeddings, h, e.pp("position_embeddings"))?,
            token_type: embedding(cfg.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            norm: ln(e.pp("LayerNorm"))?,
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let (q, k, v) = (
                linear(h, h, a.pp("self.query"))?,
                linear(h, h, a.pp("self.key"))?,
                linear(h, h, a.pp("self.value"))?,
            );
            let w = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
            let bias = match (q.bias(), k.bias(), v.bias()) {
                (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
                _ => None,
            };
            layers.push(Layer {
                qkv: Linear::new(w, bias),
                attn_out: linear(h, h, a.pp("output.dense"))?,
                attn_norm: ln(a.pp("output.LayerNorm"))?,
                intermediate: linear(h, cfg.intermediate_size, l.pp("intermediate.dense"))?,
                output: linear(cfg.intermediate_size, h, l.pp("output.dense"))?,
                out_norm: ln(l.pp("output.LayerNorm"))?,
            });
        }
        Ok(Bert {
            embeddings,
            layers,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            device: vb.device().clone(),
        })
    }

    /// Encodes a padded batch: `ids` and `mask` are `[batch, seq]` u32 tensors. Returns the
    /// mean-pooled (over the mask), L2-normalised sentence embeddings `[batch, hidden]`.
    pub fn embed(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, &self.device)?
            .unsqueeze(0)?
            .broadcast_as((b, t))?;
        let types = Tensor::zeros((b, t), DType::U32, &self.device)?;
        let x = self.embeddings.word.forward(ids)?;
        let x = x.broadcast_add(&self.embeddings.position.forward(&positions)?)?;
        let x = x.broadcast_add(&self.embeddings.token_type.forward(&types)?)?;
        let mut x = self.embeddings.norm.forward(&x)?;

        let maskf = mask.to_dtype(DType::F32)?;
        // Additive attention bias: 0 for tokens, a large negative number for padding.
        let bias = ((maskf.clone() - 1.0)? * 1e4)?.reshape((b, 1, 1, t))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for l in &self.layers {
            let split = |y: Tensor| -> Result<Tensor> {
                y.reshape((b, t, self.heads, self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let qkv = l.qkv.forward(&x)?;
            let h = self.heads * self.head_dim;
            let q = split(qkv.narrow(2, 0, h)?)?;
            let k = split(qkv.narrow(2, h, h)?)?;
            let v = split(qkv.narrow(2, 2 * h, h)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx =
                probs
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .reshape((b, t, self.heads * self.head_dim))?;
            let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let i = l.intermediate.forward(&a)?.gelu_erf()?;
            x = l.out_norm.forward(&(l.output.forward(&i)? + &a)?)?;
        }
        let m = maskf.unsqueeze(2)?;
        let summed = x.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)
    }
}
