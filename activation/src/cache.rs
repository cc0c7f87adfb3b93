//! A transformer KV cache and its safetensors form.
//!
//! Layout: per layer, keys (after RoPE) and values as `[kv_heads, tokens, head_dim]`. On disk and
//! on the wire the tensors are f16 named `past_key_values.{layer}.key` / `.value` with shape
//! `[1, kv_heads, tokens, head_dim]` — the Hugging Face `past_key_values` layout (RoPE in the
//! "rotate half" convention), so a serving engine that speaks that layout can load them; the
//! safetensors metadata names the model, tokenizer hash, token count, memory ids and text hash.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use half::f16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::config::LlamaConfig;
use crate::error::{ActivationError, Result};

/// What a serialised cache is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheMeta {
    /// The model the cache was computed with.
    pub model_id: String,
    /// Hash of the tokenizer (vocabulary, merges, pre-tokenizer).
    pub tokenizer_hash: String,
    /// Tokens in the cached prefix.
    pub token_count: u32,
    /// Memories whose text the prefix holds.
    pub memory_ids: Vec<String>,
    /// Hash of the composed prefix text.
    pub text_hash: String,
}

/// Keys and values of one layer, `[kv_heads, tokens, head_dim]` f32.
#[derive(Debug, Clone)]
pub struct LayerKv {
    /// Keys after RoPE.
    pub k: Tensor,
    /// Values.
    pub v: Tensor,
}

/// The KV cache of a token prefix: every layer's keys and values.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// One entry per layer; `None` until the first token is written.
    pub layers: Vec<Option<LayerKv>>,
    /// Tokens held.
    pub len: usize,
}

/// Name of a layer's key tensor.
pub fn key_name(layer: usize) -> String {
    format!("past_key_values.{layer}.key")
}

/// Name of a layer's value tensor.
pub fn value_name(layer: usize) -> String {
    format!("past_key_values.{layer}.value")
}

impl KvCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Builds a cache from host buffers laid out `[kv_heads, tokens, head_dim]` per layer.
    pub fn from_host(
        config: &LlamaConfig,
        len: usize,
        kv: Vec<(Vec<f32>, Vec<f32>)>,
    ) -> Result<Self> {
        let shape = (config.num_kv_heads, len, config.head_dim());
        let mut layers = Vec::with_capacity(kv.len());
        for (k, v) in kv {
            layers.push(Some(LayerKv {
                k: Tensor::from_vec(k, shape, &Device::Cpu)?,
                v: Tensor::from_vec(v, shape, &Device::Cpu)?,
            }));
        }
        Ok(Self { layers, len })
    }

    /// The largest absolute difference between two caches' keys and values.
    pub fn max_abs_diff(&self, other: &KvCache) -> Result<f32> {
        if self.len != other.len || self.layers.len() != other.layers.len() {
            return Err(ActivationError::Cache(format!(
                "caches differ in shape: {}×{} vs {}×{}",
                self.layers.len(),
                self.len,
                other.layers.len(),
                other.len
            )));
        }
        let mut m = 0f32;
        for (a, b) in self.layers.iter().zip(&other.layers) {
            if let (Some(a), Some(b)) = (a, b) {
                for (x, y) in [(&a.k, &b.k), (&a.v, &b.v)] {
                    m = m.max(max_abs_diff(x, y)?);
                }
            }
        }
        Ok(m)
    }

    /// Serialises as f16 safetensors with `meta` in the header.
    pub fn to_safetensors(&self, config: &LlamaConfig, meta: &CacheMeta) -> Result<Vec<u8>> {
        let shape = vec![1, config.num_kv_heads, self.len, config.head_dim()];
        let mut buffers: Vec<(String, Vec<u8>)> = Vec::with_capacity(self.layers.len() * 2);
        for (i, l) in self.layers.iter().enumerate() {
            let l = l
                .as_ref()
                .ok_or_else(|| ActivationError::Cache("cache is empty".into()))?;
            for (name, t) in [(key_name(i), &l.k), (value_name(i), &l.v)] {
                let v = t.to_dtype(DType::F16)?.flatten_all()?.to_vec1::<f16>()?;
                let mut bytes = Vec::with_capacity(v.len() * 2);
                for x in v {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                buffers.push((name, bytes));
            }
        }
        let views = buffers
            .iter()
            .map(|(n, b)| {
                TensorView::new(Dtype::F16, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| ActivationError::Cache(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut md = HashMap::new();
        md.insert("format".to_string(), "pt".to_string());
        md.insert("model_id".to_string(), meta.model_id.clone());
        md.insert("tokenizer_hash".to_string(), meta.tokenizer_hash.clone());
        md.insert("token_count".to_string(), meta.token_count.to_string());
        md.insert(
            "memory_ids".to_string(),
            serde_json::to_string(&meta.memory_ids).unwrap_or_default(),
        );
        md.insert("text_hash".to_string(), meta.text_hash.clone());
        md.insert("num_layers".to_string(), config.num_layers.to_string());
        md.insert("num_kv_heads".to_string(), config.num_kv_heads.to_string());
        md.insert("head_dim".to_string(), config.head_dim().to_string());
        md.insert(
            "layout".to_string(),
            "past_key_values [batch, kv_heads, tokens, head_dim], keys after RoPE (rotate-half)"
                .to_string(),
        );
        safetensors::tensor::serialize(views, Some(md))
            .map_err(|e| ActivationError::Cache(e.to_string()))
    }

    /// Reads what [`KvCache::to_safetensors`] wrote, checking it fits `config`.
    pub fn from_safetensors(bytes: &[u8], config: &LlamaConfig) -> Result<(Self, CacheMeta)> {
        let meta = read_meta(bytes)?;
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| ActivationError::Cache(e.to_string()))?;
        let len = meta.token_count as usize;
        let want = [1, config.num_kv_heads, len, config.head_dim()];
        let read = |name: String| -> Result<Tensor> {
            let t = st
                .tensor(&name)
                .map_err(|e| ActivationError::Cache(format!("{name}: {e}")))?;
            if t.dtype() != Dtype::F16 || t.shape() != want {
                return Err(ActivationError::Cache(format!(
                    "{name} is {:?} {:?}, expected F16 {want:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let v: Vec<f32> = t
                .data()
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            Ok(Tensor::from_vec(
                v,
                (config.num_kv_heads, len, config.head_dim()),
                &Device::Cpu,
            )?)
        };
        let layers = (0..config.num_layers)
            .map(|i| {
                Ok(Some(LayerKv {
                    k: read(key_name(i))?,
                    v: read(value_name(i))?,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((Self { layers, len }, meta))
    }
}

/// Reads a serialised cache's metadata without decoding its tensors.
pub fn read_meta(bytes: &[u8]) -> Result<CacheMeta> {
    let (_, md) =
        SafeTensors::read_metadata(bytes).map_err(|e| ActivationError::Cache(e.to_string()))?;
    let m = md
        .metadata()
        .as_ref()
        .ok_or_else(|| ActivationError::Cache("no metadata".into()))?;
    let get = |k: &str| {
        m.get(k)
            .cloned()
            .ok_or_else(|| ActivationError::Cache(format!("metadata lacks {k}")))
    };
    Ok(CacheMeta {
        model_id: get("model_id")?,
        tokenizer_hash: get("tokenizer_hash")?,
        token_count: get("token_count")?
            .parse()
            .map_err(|_| ActivationError::Cache("token_count is not a number".into()))?,
        memory_ids: serde_json::from_str(&get("memory_ids")?)
            .map_err(|e| ActivationError::Cache(format!("memory_ids: {e}")))?,
        text_hash: get("text_hash")?,
    })
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}
