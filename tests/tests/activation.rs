//! Activation memory with the real model (SmolLM2-135M-Instruct, GGUF dequantised to f32):
//! the tokenizer rebuilt from GGUF metadata, cache-exactness on the real weights, greedy
//! answers that use the memory, CUDA vs CPU where a GPU exists, and the operator end to end —
//! cache built for tagged memories, served as safetensors, rebuilt on delete, used by chat.

use activation::cache::KvCache;
use activation::cpu::argmax;
use activation::lm::{chat_prefix, chat_suffix};
use serde_json::{Value, json};

fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    activation::cpu::max_abs_diff(a, b).unwrap()
}

#[test]
fn the_tokenizer_is_rebuilt_from_the_gguf_metadata() {
    let lm = tests::local_lm();
    let c = lm.config();
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads
        ),
        (49152, 576, 30, 9, 3)
    );
    // Control tokens are single ids.
    assert_eq!(lm.encode("<|im_start|>").unwrap(), vec![1]);
    assert_eq!(lm.encode("<|im_end|>").unwrap(), vec![2]);
    assert_eq!(lm.special_tokens().get("<|endoftext|>"), Some(&0));
    // No prefix space: "Hello" at the start is not " Hello".
    let hello = lm.encode("Hello").unwrap();
    let spaced = lm.encode(" Hello").unwrap();
    assert_eq!(hello.len(), 1);
    assert_eq!(spaced.len(), 1);
    assert_ne!(hello, spaced);
    assert_eq!(lm.decode(&hello).unwrap(), "Hello");
    // Digits are split one by one.
    let year = lm.encode("2024").unwrap();
    assert_eq!(year.len(), 4);
    assert_eq!(lm.decode(&year[..1]).unwrap(), "2");
    // Byte-level: any text round-trips.
    for s in [
        "My dog Biscuit was born on 2019-03-14 in Lisbon.",
        "naïve café — 東京 🐕",
        "  two  spaces\tand a tab\n",
    ] {
        assert_eq!(lm.decode(&lm.encode(s).unwrap()).unwrap(), s);
    }
}

#[test]
fn prefill_then_decode_equals_the_full_forward_pass_on_smollm2() {
    let lm = tests::local_lm();
    let m = lm.cpu();
    let prefix = chat_prefix(
        "You are a helpful assistant.",
        &[
            "The user's dog is called Biscuit.".into(),
            "The user lives in Lisbon.".into(),
        ],
    );
    let suffix = chat_suffix("", &[("user".into(), "Where do I live?".into())]);
    let p = lm.encode(&prefix).unwrap();
    let s = lm.encode(&suffix).unwrap();
    let all: Vec<u32> = p.iter().chain(&s).copied().collect();
    let mut full_cache = KvCache::new(m.config().num_layers);
    let full = m.forward(&all, &mut full_cache, true).unwrap();
    let (mut cache, _) = m.prefill(&p).unwrap();
    // The prompt rest in one chunk, then three decode steps.
    let chunk = m.forward(&s, &mut cache, true).unwrap();
    let d = max_diff(&chunk, &full.narrow(0, p.len(), s.len()).unwrap());
    eprintln!("SmolLM2: max |Δlogit| prompt-on-cache vs full pass = {d:e}");
    assert!(d <= 1e-3, "prompt on the cached prefix differs by {d}");
    let mut next = argmax(&chunk.narrow(0, s.len() - 1, 1).unwrap()).unwrap();
    let mut seq = all.clone();
    let mut f_cache = full_cache;
    for _ in 0..3 {
        seq.push(next);
        let a = m.forward(&[next], &mut cache, false).unwrap();
        let b = m.forward(&[next], &mut f_cache, false).unwrap();
        let d = max_diff(&a, &b);
        assert!(d <= 1e-3, "decode step differs by {d}");
        next = argmax(&a).unwrap();
    }
    // And against a fresh full pass over the whole sequence.
    let mut fresh = KvCache::new(m.config().num_layers);
    let last = m.forward(&seq, &mut fresh, false).unwrap();
    let mut c2 = KvCache::new(m.config().num_layers);
    m.forward(&seq[..seq.len() - 1], &mut c2, false).unwrap();
    let step = m.forward(&seq[seq.len() - 1..], &mut c2, false).unwrap();
    assert!(max_diff(&last, &step) <= 1e-3);
}

#[test]
fn the_model_answers_from_a_cached_memory_prefix() {
    let lm = tests::local_lm();
    let prefix = chat_prefix(
        "You are a helpful assistant.",
        &["The user lives in Lisbon, Portugal.".into()],
    );
    let p = lm.encode(&prefix).unwrap();
    let cache = lm.prefill(&p).unwrap();
    let q = lm
        .encode(&chat_suffix(
            "",
            &[("user".into(), "What is the capital of France?".into())],
        ))
        .unwrap();
    let g = lm.generate(Some(&cache), &q, 24, |_| {}).unwrap();
    assert!(g.text.contains("Paris"), "{:?}", g.text);
    assert_eq!(g.cached_tokens, p.len());
    // The same prompt read from scratch gives the same greedy answer.
    let all: Vec<u32> = p.iter().chain(&q).copied().collect();
    let g2 = lm.generate(None, &all, 24, |_| {}).unwrap();
    assert_eq!(g.tokens, g2.tokens);
    // Through the stored f16 form as well.
    let meta = activation::CacheMeta {
        model_id: lm.model_id.clone(),
        tokenizer_hash: lm.tokenizer_hash.clone(),
        token_count: p.len() as u32,
        memory_ids: vec![],
        text_hash: String::new(),
    };
    let bytes = cache.to_safetensors(lm.config(), &meta).unwrap();
    assert_eq!(
        bytes.len() - 8 - u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize,
        lm.config().cache_bytes_per_token() * p.len()
    );
    let (c16, _) = KvCache::from_safetensors(&bytes, lm.config()).unwrap();
    let g3 = lm.generate(Some(&c16), &q, 24, |_| {}).unwrap();
    assert!(g3.text.contains("Paris"), "{:?}", g3.text);
}

#[test]
fn cuda_kv_matches_the_cpu_on_smollm2() {
    if !activation::testing::skip_unless(
        activation::cuda::available(),
        "tests::activation::cuda_kv_matches_the_cpu_on_smollm2",
        "no CUDA driver or GPU",
        "MEMOS_REQUIRE_CUDA",
    ) {
        return;
    }
    let lm = tests::local_lm();
    let gpu = activation::cuda::CudaModel::new(lm.cpu().weights()).unwrap();
    let toks = lm
        .encode(&chat_prefix(
            "You are a helpful assistant.",
            &["The user's dog is called Biscuit and was born in 2019.".into()],
        ))
        .unwrap();
    let (c_cpu, _) = lm.cpu().prefill(&toks).unwrap();
    let (c_gpu, _) = gpu.prefill(&toks).unwrap();
    let d = c_cpu.max_abs_diff(&c_gpu).unwrap();
    assert!(d <= 1e-3, "CUDA K/V differ from the CPU by {d}");
}

fn kv_meta(s: &tests::Server, cube: &str) -> Option<store::KvEntry> {
    let txn = s.memos.store.read_txn().unwrap();
    s.memos.store.kv_entry(&txn, cube, "default").unwrap()
}

async fn add(s: &tests::Server, cube: &str, text: &str, tags: &[&str]) -> String {
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "u1", "writable_cube_ids": [cube], "async_mode": "sync",
                "custom_tags": tags, "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    b["data"][0]["memory_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_builds_serves_rebuilds_and_chat_reuses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.activation.enabled = true;
    cfg.activation.lm_dir = tests::lm_dir();
    cfg.activation.device = activation::DevicePref::Cpu;
    let s = tests::Server::start(cfg).await;
    let cube = "act1";

    // Before anything is activated there is no cache.
    let (st, b) = s.get(&format!("/product/kv/{cube}/meta")).await;
    assert_eq!(st, 404, "{b}");

    let dog = add(&s, cube, "My dog is called Biscuit.", &["activation"]).await;
    let city = add(&s, cube, "I live in Lisbon.", &["activation"]).await;
    let jazz = add(&s, cube, "I went to the market on Sunday.", &[]).await;
    tests::wait_for_secs(
        || kv_meta(&s, cube).is_some_and(|e| e.memory_ids.len() == 2),
        "the KV cache of both tagged memories",
        120,
    )
    .await;
    let e = kv_meta(&s, cube).unwrap();
    assert!(e.memory_ids.contains(&dog) && e.memory_ids.contains(&city));
    assert!(!e.memory_ids.contains(&jazz));
    assert!(e.model_id.starts_with("SmolLM2"), "{}", e.model_id);

    // Metadata and the safetensors download agree with the entry and the model's shape.
    let (st, meta) = s.get(&format!("/product/kv/{cube}/meta")).await;
    assert_eq!(st, 200, "{meta}");
    let d = &meta["data"];
    assert_eq!(d["token_count"], json!(e.token_count));
    assert_eq!(d["bytes_per_token"], json!(30 * 2 * 3 * 64 * 2));
    assert_eq!(d["current_model"], json!(true));
    let r = reqwest::get(format!("{}/product/kv/{cube}", s.url))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["x-memos-token-count"],
        e.token_count.to_string().as_str()
    );
    let bytes = r.bytes().await.unwrap();
    let lm = s.memos.activation.as_ref().unwrap().lm.clone();
    let (cache, m) = KvCache::from_safetensors(&bytes, lm.config()).unwrap();
    assert_eq!(m.memory_ids, e.memory_ids);
    assert_eq!(cache.len(), e.token_count as usize);
    cached_prefix_chat_streaming_and_rebuild(s, e, cache, dog, city).await;
}

/// The cached prefix decodes like the text, chat reuses it, streams it, and a delete rebuilds it.
async fn cached_prefix_chat_streaming_and_rebuild(
    s: tests::Server,
    e: store::KvEntry,
    cache: KvCache,
    dog: String,
    city: String,
) {
    let cube = "act1";
    let lm = s.memos.activation.as_ref().unwrap().lm.clone();
    // It is the cache of the composed prefix: decoding on it matches reading the prefix.
    let a = s.memos.activation.as_ref().unwrap().clone();
    let prefix = {
        let txn = s.memos.store.read_txn().unwrap();
        let sel = a.selection(&s.memos.store, &txn, cube).unwrap();
        a.compose(&a.config().system, &sel).unwrap()
    };
    assert_eq!(prefix.hash, e.text_hash);
    let (fresh, _) = lm.cpu().prefill(&prefix.tokens).unwrap();
    let diff = fresh.max_abs_diff(&cache).unwrap();
    assert!(
        diff < 0.05,
        "stored cache differs from a fresh prefill by {diff} (f16 rounding only)"
    );

    // Chat with the local model reuses the cached prefix.
    let (st, b) = s
        .post(
            "/product/chat/complete",
            json!({"user_id": "u1", "readable_cube_ids": [cube], "query": "What is my dog called?",
                "model_name_or_path": "local", "add_message_on_answer": false, "max_tokens": 24}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    // (The prompt carries the current time, so the answer's wording is not asserted here; the
    // cached and uncached paths are compared token for token above.)
    let usage = &b["data"]["usage"];
    assert_eq!(usage["cached_tokens"], json!(e.token_count), "{b}");
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > e.token_count as u64,
        "{b}"
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{b}");
    assert!(
        !b["data"]["response"].as_str().unwrap().trim().is_empty(),
        "{b}"
    );
    assert_eq!(b["data"]["model"], "local");
    // Memories in the cached prefix are not repeated in the rest of the prompt.
    let refs = b["data"]["references"].as_array().unwrap();
    assert!(
        refs.iter()
            .all(|r| r["id"] != json!(dog) && r["id"] != json!(city)),
        "{b}"
    );

    // Streamed: text chunks, then the end event with the same cache use.
    let body = reqwest::Client::new()
        .post(format!("{}/product/chat/stream", s.url))
        .json(
            &json!({"user_id": "u1", "readable_cube_ids": [cube], "query": "Where do I live?",
            "model_name_or_path": "local", "add_message_on_answer": false, "max_tokens": 16}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = tests::sse_events(&body)
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "reference", "{body}");
    assert!(events.iter().any(|e| e["type"] == "text"), "{body}");
    let end = events.last().unwrap();
    assert_eq!(end["type"], "end", "{body}");
    assert_eq!(
        end["data"]["usage"]["cached_tokens"],
        json!(e.token_count),
        "{body}"
    );

    // Deleting a covered memory removes the cache in the same commit; the worker rebuilds it
    // from what is left.
    let (st, b) = s
        .post("/product/delete_memory", json!({"memory_ids": [dog]}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["receipt"]["kv_cache"], json!(1), "{b}");
    tests::wait_for_secs(
        || kv_meta(&s, cube).is_some_and(|e| e.memory_ids == vec![city.clone()]),
        "the rebuilt KV cache",
        120,
    )
    .await;
    let (st, b) = s
        .post(&format!("/product/kv/{cube}/rebuild"), json!({}))
        .await;
    assert_eq!(st, 202, "{b}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_activation_the_routes_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    let (st, b) = s.post("/product/kv/c1/rebuild", json!({})).await;
    assert_eq!(st, 503, "{b}");
    assert!(b["message"].as_str().unwrap().contains("activation"), "{b}");
    let (st, _) = s.get("/product/kv/c1").await;
    assert_eq!(st, 404);
    // Chat naming the local model without activation or an LLM: 503 with the reason.
    let (st, b): (u16, Value) = s
        .post(
            "/product/chat/complete",
            json!({"user_id": "u1", "query": "hi", "model_name_or_path": "local"}),
        )
        .await;
    assert_eq!(st, 503, "{b}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_working_set_selection_activates_working_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.activation.enabled = true;
    cfg.activation.lm_dir = tests::lm_dir();
    cfg.activation.device = activation::DevicePref::Cpu;
    cfg.activation.select = pipelines::activation::Select::Working;
    let s = tests::Server::start(cfg).await;
    let store = s.memos.store.clone();
    let mk = |i: usize, text: &str, ty: store::MemoryType, status: store::Status| {
        let mut r = tests::bench::record(i, text.into());
        r.cube_id = "w1".into();
        r.memory_type = ty;
        r.status = status;
        r.updated_at = i as i64;
        r
    };
    let recs = [
        mk(
            1,
            "The user is planning a trip to Kyoto.",
            store::MemoryType::WorkingMemory,
            store::Status::Activated,
        ),
        mk(
            2,
            "The user prefers window seats.",
            store::MemoryType::WorkingMemory,
            store::Status::Activated,
        ),
        mk(
            3,
            "The user once lived in Oslo.",
            store::MemoryType::LongTermMemory,
            store::Status::Activated,
        ),
        mk(
            4,
            "The user wanted a hotel near the station.",
            store::MemoryType::WorkingMemory,
            store::Status::Archived,
        ),
    ];
    let mut w = store.write_txn().unwrap();
    for r in &recs {
        store.insert(&mut w, r, &vec![0.1; 384]).unwrap();
    }
    store.commit(w).unwrap();
    s.memos.kv_rebuild("w1").unwrap();
    tests::wait_for_secs(
        || kv_meta(&s, "w1").is_some(),
        "the working-set KV cache",
        120,
    )
    .await;
    let e = kv_meta(&s, "w1").unwrap();
    // Activated WorkingMemory only, newest first.
    assert_eq!(
        e.memory_ids,
        vec!["bench-2".to_string(), "bench-1".to_string()]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefix_keeps_the_newest_memories_that_fit_the_token_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.activation.enabled = true;
    cfg.activation.lm_dir = tests::lm_dir();
    cfg.activation.device = activation::DevicePref::Cpu;
    cfg.activation.max_tokens = 40;
    let s = tests::Server::start(cfg).await;
    let store = s.memos.store.clone();
    let mut w = store.write_txn().unwrap();
    for i in 1..=4 {
        let mut r = tests::bench::record(
            i,
            format!("Fact number {i}: the user owns {i} bicycles and rides them daily."),
        );
        r.cube_id = "b1".into();
        r.tags = vec!["activation".into()];
        r.updated_at = i as i64;
        store.insert(&mut w, &r, &vec![0.1; 384]).unwrap();
    }
    store.commit(w).unwrap();
    s.memos.kv_rebuild("b1").unwrap();
    tests::wait_for_secs(|| kv_meta(&s, "b1").is_some(), "the budgeted KV cache", 120).await;
    let e = kv_meta(&s, "b1").unwrap();
    assert!(e.token_count <= 40, "{}", e.token_count);
    // Some, not all, of the memories fit; those kept are the newest, in order.
    let n = e.memory_ids.len();
    assert!((1..4).contains(&n), "{:?}", e.memory_ids);
    let newest: Vec<String> = (1..=4)
        .rev()
        .take(n)
        .map(|i| format!("bench-{i}"))
        .collect();
    assert_eq!(e.memory_ids, newest);
    s.stop().await;
}
