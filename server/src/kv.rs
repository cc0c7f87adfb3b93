//! Activation memory as the service offers it: a cube's stored KV cache, rebuilds on request,
//! and the JSON description `GET /product/kv/{cube}` answers with.

use std::sync::Arc;

use activation::LocalLm;
use pipelines::activation::{Activation, ENTRY};
use store::KvEntry;

use crate::error::ServerError;
use crate::service::Memos;

impl Memos {
    fn activation(&self) -> Result<&Arc<Activation>, ServerError> {
        self.activation.as_ref().ok_or_else(|| {
            ServerError::Unavailable(
                "activation memory is off: set [activation] enabled = true (MEMOS_ACTIVATION__ENABLED=true) after `memos model fetch --lm`".into(),
            )
        })
    }

    /// A cube's stored KV cache entry (404 when there is none).
    pub async fn kv_entry(&self, cube: String) -> Result<KvEntry, ServerError> {
        self.blocking(move |store| {
            let txn = store.read_txn()?;
            store.kv_entry(&txn, &cube, ENTRY)?.ok_or_else(|| {
                ServerError::NotFound(format!(
                    "cube {cube} has no KV cache (no activated memories yet, or it is being built)"
                ))
            })
        })
        .await
    }

    /// Queues a rebuild of a cube's cache (503 when activation is off).
    pub fn kv_rebuild(&self, cube: &str) -> Result<(), ServerError> {
        self.activation()?.notify(cube);
        Ok(())
    }
}

/// The JSON description of a stored cache (everything but the tensors).
pub fn entry_meta(e: &KvEntry, lm: Option<&LocalLm>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "cube_id": e.cube_id,
        "name": e.name,
        "model_id": e.model_id,
        "tokenizer_hash": e.tokenizer_hash,
        "token_count": e.token_count,
        "memory_ids": e.memory_ids,
        "text_hash": e.text_hash,
        "created_at": store::time::micros_to_rfc3339(e.created_at),
        "bytes": e.data.len(),
        "dtype": "float16",
        "format": "safetensors",
        "tensors": "past_key_values.{layer}.key / .value, [1, kv_heads, tokens, head_dim], keys after RoPE (rotate-half)",
    });
    if let Some(lm) = lm {
        let c = lm.config();
        v["num_layers"] = c.num_layers.into();
        v["num_kv_heads"] = c.num_kv_heads.into();
        v["head_dim"] = c.head_dim().into();
        v["bytes_per_token"] = c.cache_bytes_per_token().into();
        v["current_model"] =
            (lm.model_id == e.model_id && lm.tokenizer_hash == e.tokenizer_hash).into();
    }
    v
}
