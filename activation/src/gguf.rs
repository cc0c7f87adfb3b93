//! Loading a Llama-architecture model and its tokenizer from a GGUF file.
//!
//! Weights are dequantised to f32 (quantised prefill and decode disagree by up to 0.85 in the
//! logits; the cache must be exact). llama.cpp's converter permutes the query and key rows of each
//! head into an interleaved RoPE layout; they are permuted back here so keys come out in the
//! Hugging Face "rotate half" layout that serving engines expect in `past_key_values`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::config::LlamaConfig;
use crate::error::{ActivationError, Result};
use crate::weights::{LayerWeights, Weights};

/// A model read from a GGUF file.
pub struct GgufModel {
    /// The weights (f32).
    pub weights: Weights,
    /// The tokenizer rebuilt from the file's metadata.
    pub tokenizer: Tokenizer,
    /// Hash identifying the tokenizer (vocabulary, merges, pre-tokenizer rules).
    pub tokenizer_hash: String,
    /// Identifies the weights: the file's name and its sha256 prefix.
    pub model_id: String,
    /// Beginning-of-sequence id, when the file names one.
    pub bos_id: Option<u32>,
    /// End-of-sequence id, when the file names one.
    pub eos_id: Option<u32>,
    /// Ids of control tokens (`<|im_start|>`, `<|im_end|>`, …), by text.
    pub special: HashMap<String, u32>,
}

fn err(m: impl Into<String>) -> ActivationError {
    ActivationError::ModelFile(m.into())
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn as_f32(v: &Value) -> Option<f32> {
    match v {
        Value::F32(x) => Some(*x),
        Value::F64(x) => Some(*x as f32),
        other => as_u64(other).map(|x| x as f32),
    }
}

fn strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let arr = md
        .get(key)
        .ok_or_else(|| err(format!("metadata lacks {key}")))?
        .to_vec()
        .map_err(|e| err(format!("{key}: {e}")))?;
    arr.iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| err(format!("{key}: {e}")))
        })
        .collect()
}

/// The model's shape from the `llama.*` metadata.
fn llama_config(md: &HashMap<String, Value>, vocab_size: usize) -> Result<LlamaConfig> {
    let num = |k: &str| -> Result<usize> {
        md.get(&format!("llama.{k}"))
            .and_then(as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| err(format!("metadata lacks llama.{k}")))
    };
    let config = LlamaConfig {
        vocab_size,
        hidden_size: num("embedding_length")?,
        intermediate_size: num("feed_forward_length")?,
        num_layers: num("block_count")?,
        num_heads: num("attention.head_count")?,
        num_kv_heads: num("attention.head_count_kv").or_else(|_| num("attention.head_count"))?,
        rope_theta: md
            .get("llama.rope.freq_base")
            .and_then(as_f32)
            .unwrap_or(10_000.0),
        rms_eps: md
            .get("llama.attention.layer_norm_rms_epsilon")
            .and_then(as_f32)
            .unwrap_or(1e-5),
        max_positions: num("context_length")?,
    };
    config.validate()?;
    Ok(config)
}

/// Every tensor of the file, dequantised to f32, the query and key rows un-permuted.
fn read_weights(content: &Content, f: &mut std::fs::File, config: LlamaConfig) -> Result<Weights> {
    let dev = Device::Cpu;
    let mut tensor = |name: &str| -> Result<Tensor> {
        let q = content
            .tensor(f, name, &dev)
            .map_err(|e| err(format!("tensor {name}: {e}")))?;
        Ok(q.dequantize(&dev)?)
    };
    let hd = config.head_dim();
    // Undo llama.cpp's per-head row permutation (interleaved → rotate-half RoPE layout).
    let unpermute = |w: Tensor, heads: usize| -> Result<Tensor> {
        let (rows, cols) = w.dims2()?;
        Ok(w.reshape((heads, hd / 2, 2, cols))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((rows, cols))?)
    };
    let embed = tensor("token_embd.weight")?;
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("blk.{i}");
        layers.push(LayerWeights {
            attn_norm: tensor(&format!("{p}.attn_norm.weight"))?,
            wq: unpermute(tensor(&format!("{p}.attn_q.weight"))?, config.num_heads)?,
            wk: unpermute(tensor(&format!("{p}.attn_k.weight"))?, config.num_kv_heads)?,
            wv: tensor(&format!("{p}.attn_v.weight"))?,
            wo: tensor(&format!("{p}.attn_output.weight"))?,
            ffn_norm: tensor(&format!("{p}.ffn_norm.weight"))?,
            w_gate: tensor(&format!("{p}.ffn_gate.weight"))?,
            w_up: tensor(&format!("{p}.ffn_up.weight"))?,
            w_down: tensor(&format!("{p}.ffn_down.weight"))?,
        });
    }
    let final_norm = tensor("output_norm.weight")?;
    let (lm_head, tied) = if content.tensor_infos.contains_key("output.weight") {
        (tensor("output.weight")?, false)
    } else {
        (embed.clone(), true)
    };
    if embed.dims2()? != (config.vocab_size, config.hidden_size) {
        return Err(err(format!(
            "token_embd is {:?}, expected [{}, {}]",
            embed.dims(),
            config.vocab_size,
            config.hidden_size
        )));
    }
    Ok(Weights {
        config,
        embed,
        layers,
        final_norm,
        lm_head,
        tied,
    })
}

/// Identifies the weights: the file's name (which says model and quantisation, e.g.
/// "SmolLM2-135M-Instruct.Q4_1"; `general.name` is often a training-run label) and the
/// prefix of its sha256.
fn model_id(path: &Path, md: &HashMap<String, Value>) -> Result<String> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            md.get("general.name")
                .and_then(|v| v.to_string().ok().cloned())
        })
        .unwrap_or_else(|| "gguf".into());
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{name}@{}", &hex::encode(h.finalize())[..12]))
}

/// Reads `path` (a Llama GGUF), dequantising every tensor to f32.
pub fn load(path: &Path) -> Result<GgufModel> {
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let content = Content::read(&mut f).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let md = &content.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    if arch != "llama" {
        return Err(err(format!(
            "architecture {arch:?} is not supported (only llama)"
        )));
    }
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let merges = strings(md, "tokenizer.ggml.merges")?;
    let config = llama_config(md, tokens.len())?;
    let weights = read_weights(&content, &mut f, config)?;
    let token_types: Vec<i64> = md
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|a| {
            a.iter()
                .map(|v| match v {
                    Value::I32(x) => *x as i64,
                    other => as_u64(other).map(|x| x as i64).unwrap_or(1),
                })
                .collect()
        })
        .unwrap_or_default();
    let (tokenizer, tokenizer_hash, special) = build_tokenizer(&tokens, &merges, &token_types)?;
    let id = |k: &str| md.get(k).and_then(as_u64).map(|x| x as u32);
    Ok(GgufModel {
        weights,
        tokenizer,
        tokenizer_hash,
        model_id: model_id(path, md)?,
        bos_id: id("tokenizer.ggml.bos_token_id"),
        eos_id: id("tokenizer.ggml.eos_token_id"),
        special,
    })
}

/// The pre-tokenizer and decoder rules, part of the tokenizer hash.
const RULES: &str = "bpe;digits(individual);byte_level(add_prefix_space=false,regex=true)";

/// Rebuilds a byte-level BPE tokenizer from GGUF `tokens` and `merges`: digits split one by
/// one, byte-level without a prefix space (what SmolLM2's `tokenizer.json` does; candle's GGUF
/// tokenizer adds a prefix space and gives different ids). Control tokens (type 3) become
/// special tokens. Returns the tokenizer, its hash and the special tokens' ids.
pub fn build_tokenizer(
    tokens: &[String],
    merges: &[String],
    token_types: &[i64],
) -> Result<(Tokenizer, String, HashMap<String, u32>)> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let pairs = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| ActivationError::Tokenizer(format!("merge {m:?} has no space")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(|e| ActivationError::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    let mut special = HashMap::new();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if token_types.get(i) == Some(&3) {
            special.insert(t.clone(), i as u32);
            added.push(AddedToken::from(t.clone(), true));
        }
    }
    tok.add_special_tokens(added)
        .map_err(|e| ActivationError::Tokenizer(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(RULES.as_bytes());
    for t in tokens {
        h.update(t.as_bytes());
        h.update([0]);
    }
    h.update([1]);
    for m in merges {
        h.update(m.as_bytes());
        h.update([0]);
    }
    Ok((tok, hex::encode(&h.finalize()[..16]), special))
}
