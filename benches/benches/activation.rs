//! Activation memory: prefill throughput of the local model (SmolLM2-135M-Instruct, f32) on
//! the CPU (and CUDA when a GPU exists), KV-cache size per token, and time to first token with
//! the memory prefix cached versus re-reading it. Writes the `activation` section of
//! BENCHMARKS.md.
//!
//! `cargo bench --profile dev -p benches --bench activation`; `MEMOS_BENCH_RUNS` (default 3)
//! sets the repetitions per measurement (the median is reported).

use std::time::{Duration, Instant};

use activation::KvCache;
use activation::lm::{chat_prefix, chat_suffix};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Prefill throughput on the CPU (and CUDA when a GPU exists) at 128, 512 and 1,024 tokens.
fn prefill_section(lm: &activation::LocalLm, all_tokens: &[u32], runs: usize, md: &mut String) {
    md.push_str("| prefill | tokens | time | tokens/s |\n|---|---:|---:|---:|\n");
    let gpu = if activation::cuda::available() {
        activation::cuda::CudaModel::new(lm.cpu().weights()).ok()
    } else {
        None
    };
    for n in [128usize, 512, 1024] {
        let toks = &all_tokens[..n.min(all_tokens.len())];
        let t = median(
            (0..runs)
                .map(|_| {
                    let s = Instant::now();
                    lm.cpu().prefill(toks).unwrap();
                    s.elapsed()
                })
                .collect(),
        );
        md.push_str(&format!(
            "| CPU | {} | {:.0} ms | {:.0} |\n",
            toks.len(),
            t.as_secs_f64() * 1000.0,
            toks.len() as f64 / t.as_secs_f64()
        ));
        if let Some(g) = &gpu {
            g.prefill(toks).unwrap(); // warm-up (module load, cuBLAS heuristics)
            let t = median(
                (0..runs.max(5))
                    .map(|_| {
                        let s = Instant::now();
                        g.prefill(toks).unwrap();
                        g.synchronize().unwrap();
                        s.elapsed()
                    })
                    .collect(),
            );
            md.push_str(&format!(
                "| CUDA | {} | {:.1} ms | {:.0} |\n",
                toks.len(),
                t.as_secs_f64() * 1000.0,
                toks.len() as f64 / t.as_secs_f64()
            ));
        }
    }
    if gpu.is_none() {
        md.push_str("\nCUDA: not measured — this machine has no GPU or CUDA driver (the CUDA path falls back to the CPU).\n");
    }
}

/// Time to first token: a question after the memory prefix, cached vs re-read vs decoded from
/// the stored form.
fn ttft_section(
    lm: &activation::LocalLm,
    prefix: &[u32],
    cache: &KvCache,
    bytes: &[u8],
    runs: usize,
    md: &mut String,
) {
    let cfg = lm.config().clone();
    let n = prefix.len();
    // Time to first token: a question after the memory prefix, cached vs re-read.
    let q = lm
        .encode(&chat_suffix(
            "",
            &[(
                "user".into(),
                "When did Caroline go to the LGBTQ support group?".into(),
            )],
        ))
        .unwrap();
    let full: Vec<u32> = prefix.iter().chain(&q).copied().collect();
    let uncached = median(
        (0..runs)
            .map(|_| lm.generate(None, &full, 1, |_| {}).unwrap().ttft)
            .collect(),
    );
    let cached = median(
        (0..runs)
            .map(|_| lm.generate(Some(cache), &q, 1, |_| {}).unwrap().ttft)
            .collect(),
    );
    let loaded = median(
        (0..runs)
            .map(|_| {
                let s = Instant::now();
                let (c, _) = KvCache::from_safetensors(bytes, &cfg).unwrap();
                lm.generate(Some(&c), &q, 1, |_| {}).unwrap();
                s.elapsed()
            })
            .collect(),
    );
    md.push_str(&format!(
    "\n| time to first token (CPU), {n}-token memory prefix + {}-token question | TTFT |\n|---|---:|\n\
     | re-reading the memory text (full prefill) | {:.0} ms |\n\
     | cached prefix (in memory) | {:.0} ms |\n\
     | cached prefix, decoded from the stored f16 safetensors first | {:.0} ms |\n\
     | speed-up (in memory) | {:.1}× |\n",
    q.len(),
    uncached.as_secs_f64() * 1000.0,
    cached.as_secs_f64() * 1000.0,
    loaded.as_secs_f64() * 1000.0,
    uncached.as_secs_f64() / cached.as_secs_f64()
));
}

fn main() {
    let runs: usize = std::env::var("MEMOS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let lm = tests::local_lm();
    let cfg = lm.config().clone();
    // Memory text: LoCoMo turns, as a cube's activated memories would read.
    let turns = tests::bench::locomo_turns();
    let memories: Vec<String> = turns.iter().take(400).cloned().collect();
    let prefix_all = chat_prefix(
        "You are a helpful assistant with a long-term memory of the user.",
        &memories,
    );
    let all_tokens = lm.encode(&prefix_all).unwrap();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Model: SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to f32; {} layers, {} query / {} KV heads, head dim {}). \
         CPU: {threads} threads (candle). Median of {runs} runs. `cargo bench --profile dev -p benches --bench activation`.\n\n",
        cfg.num_layers,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim()
    );
    prefill_section(&lm, &all_tokens, runs, &mut md);

    // Cache size per token (f16 K and V of every layer) and the stored form's size.
    let n = 1024.min(all_tokens.len());
    let prefix = &all_tokens[..n];
    let cache = lm.cpu().prefill(prefix).unwrap().0;
    let meta = activation::CacheMeta {
        model_id: lm.model_id.clone(),
        tokenizer_hash: lm.tokenizer_hash.clone(),
        token_count: n as u32,
        memory_ids: vec![],
        text_hash: String::new(),
    };
    let bytes = cache.to_safetensors(&cfg, &meta).unwrap();
    md.push_str(&format!(
        "\nKV cache: **{} bytes/token** (f16: {} layers × K,V × {} KV heads × {} dims × 2 B); a {n}-token prefix stores {:.1} MiB as safetensors.\n",
        cfg.cache_bytes_per_token(),
        cfg.num_layers,
        cfg.num_kv_heads,
        cfg.head_dim(),
        bytes.len() as f64 / (1 << 20) as f64
    ));

    ttft_section(&lm, prefix, &cache, &bytes, runs, &mut md);
    println!("{md}");
    let out = tests::root().join("BENCHMARKS.md");
    memos::eval::write_section(&out, "activation", &md).unwrap();
}
