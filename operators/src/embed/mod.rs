//! Embedders: the local all-MiniLM-L6-v2 on candle, and any OpenAI-compatible
//! `/v1/embeddings` endpoint.

pub mod bert;
pub mod fetch;
mod openai;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::{Tokenizer, TruncationParams};

pub use openai::OpenAiEmbedder;

use crate::error::{OperatorError, Result};

/// Turns texts into unit vectors. Blocking: call it from a blocking thread.
pub trait Embedder: Send + Sync {
    /// Output dimensions.
    fn dimensions(&self) -> usize;
    /// Model identifier.
    fn model_id(&self) -> &str;
    /// Embeds `texts`, one L2-normalised vector each, in input order.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

/// all-MiniLM-L6-v2 run in-process with candle on the CPU.
pub struct LocalEmbedder {
    model: bert::Bert,
    tokenizer: Tokenizer,
    device: Device,
    batch_size: usize,
    dims: usize,
    id: String,
    // candle's CPU kernels use their own thread pool; one batch at a time avoids oversubscribing.
    lock: Mutex<()>,
}

/// Longest input in tokens; longer texts are truncated.
pub const MAX_TOKENS: usize = 256;

impl LocalEmbedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path, batch_size: usize) -> Result<Self> {
        let file = |n: &str| -> Result<PathBuf> {
            let p = dir.join(n);
            if p.is_file() {
                Ok(p)
            } else {
                Err(OperatorError::ModelFiles(format!(
                    "{} is missing (run `memos model fetch`)",
                    p.display()
                )))
            }
        };
        let cfg: bert::BertConfig =
            serde_json::from_slice(&std::fs::read(file("config.json")?)?)
                .map_err(|e| OperatorError::ModelFiles(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(file("tokenizer.json")?)
            .map_err(|e| OperatorError::ModelFiles(format!("tokenizer.json: {e}")))?;
        // The packaged tokenizer pads and truncates to 128. Padding is done per forward pass
        // instead (to the longest input of that pass); truncation is at MAX_TOKENS.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| OperatorError::ModelFiles(format!("tokenizer: {e}")))?;
        let device = Device::Cpu;
        let weights = file("model.safetensors")?;
        // SAFETY: the weights file is memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device)? };
        let model = bert::Bert::load(vb, &cfg)?;
        Ok(LocalEmbedder {
            model,
            tokenizer,
            device,
            batch_size: batch_size.max(1),
            dims: cfg.hidden_size,
            id: "sentence-transformers/all-MiniLM-L6-v2".into(),
            lock: Mutex::new(()),
        })
    }

    /// Runs the model on already-tokenised inputs of similar length (padded to the longest).
    fn forward(&self, enc: &[&tokenizers::Encoding]) -> Result<Vec<Vec<f32>>> {
        let t = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let b = enc.len();
        let mut ids = vec![0u32; b * t];
        let mut mask = vec![0u32; b * t];
        for (row, e) in enc.iter().enumerate() {
            let n = e.get_ids().len();
            ids[row * t..row * t + n].copy_from_slice(e.get_ids());
            mask[row * t..row * t + n].copy_from_slice(&e.get_attention_mask()[..n]);
        }
        let ids = Tensor::from_vec(ids, (b, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, t), &self.device)?;
        let out = self.model.embed(&ids, &mask)?;
        Ok(out.to_vec2::<f32>()?)
    }
}

impl Embedder for LocalEmbedder {
    fn dimensions(&self) -> usize {
        self.dims
    }

    fn model_id(&self) -> &str {
        &self.id
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Tokenise without padding, sort by length, and cut into forward passes of at most
        // `batch_size` inputs and TOKEN_BUDGET padded tokens, so little compute goes to padding.
        let enc = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| OperatorError::Model(format!("tokenize: {e}")))?;
        let len = |i: usize| enc[i].get_ids().len();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| len(i));
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len()
                && end - start < self.batch_size
                && (end - start + 1) * len(order[end]) <= TOKEN_BUDGET
            {
                end += 1;
            }
            let refs: Vec<&tokenizers::Encoding> =
                order[start..end].iter().map(|&i| &enc[i]).collect();
            for (i, v) in order[start..end].iter().zip(self.forward(&refs)?) {
                out[*i] = v;
            }
            start = end;
        }
        Ok(out)
    }
}

/// Padded tokens per forward pass (32 sentences of 64 tokens).
const TOKEN_BUDGET: usize = 2048;

/// A deterministic, model-free embedder (hashed character trigrams). Used to measure the
/// pipeline without the model's cost, and as a fallback in tests of non-semantic behaviour.
pub struct HashEmbedder {
    dims: usize,
}

impl HashEmbedder {
    /// With `dims` dimensions.
    pub fn new(dims: usize) -> Self {
        HashEmbedder { dims }
    }
}

impl Embedder for HashEmbedder {
    fn dimensions(&self) -> usize {
        self.dims
    }
    fn model_id(&self) -> &str {
        "hash-trigram"
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; self.dims];
                let chars: Vec<char> = t.to_lowercase().chars().collect();
                for w in chars.windows(3) {
                    let mut h: u64 = 1469598103934665603;
                    for c in w {
                        h = (h ^ *c as u64).wrapping_mul(1099511628211);
                    }
                    v[(h % self.dims as u64) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 0.0 {
                    v.iter_mut().for_each(|x| *x /= n);
                } else {
                    v[0] = 1.0;
                }
                v
            })
            .collect())
    }
}
