//! The activation model on a tiny random-initialised Llama: the cache is exact, its f16 form
//! round-trips, bad input is refused, and (where CUDA exists) the GPU prefill matches the CPU.

use activation::cache::{CacheMeta, KvCache};
use activation::cpu::{CpuModel, argmax};
use activation::{ActivationError, LlamaConfig, Weights};
use candle_core::Tensor;

fn model(seed: u64) -> CpuModel {
    CpuModel::new(Weights::random(&LlamaConfig::tiny(), seed).unwrap()).unwrap()
}

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) % 300)
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    activation::cpu::max_abs_diff(a, b).unwrap()
}

#[test]
fn prefill_then_decode_equals_the_full_forward_pass() {
    let m = model(7);
    let toks = tokens(48, 3);
    let mut full_cache = KvCache::new(2);
    let full = m.forward(&toks, &mut full_cache, true).unwrap();
    assert_eq!(full.dims(), &[48, 300]);

    // Prefill 40 tokens, then decode the remaining 8 one at a time on top of the cache.
    let (mut cache, last) = m.prefill(&toks[..40]).unwrap();
    assert_eq!(cache.len(), 40);
    let d = max_diff(&last, &full.narrow(0, 39, 1).unwrap());
    assert!(d <= 1e-4, "prefill logits differ by {d}");
    let mut worst = 0f32;
    for (i, &t) in toks[40..].iter().enumerate() {
        let step = m.forward(&[t], &mut cache, false).unwrap();
        worst = worst.max(max_diff(&step, &full.narrow(0, 40 + i, 1).unwrap()));
    }
    eprintln!("tiny model: max |Δlogit| decode-on-cache vs full pass = {worst:e}");
    assert!(
        worst <= 1e-4,
        "decode logits differ from the full pass by {worst}"
    );
    assert_eq!(cache.len(), 48);
    // The incrementally built cache holds the same keys and values as the one-shot pass.
    let kv = cache.max_abs_diff(&full_cache).unwrap();
    assert!(kv <= 1e-5, "K/V differ by {kv}");

    // Chunked prefill (30 + 18) gives the same logits too.
    let (mut c2, _) = m.prefill(&toks[..30]).unwrap();
    let chunk = m.forward(&toks[30..], &mut c2, true).unwrap();
    let d = max_diff(&chunk, &full.narrow(0, 30, 18).unwrap());
    assert!(d <= 1e-4, "chunked prefill differs by {d}");
}

#[test]
fn a_different_prefix_gives_different_logits() {
    // The comparison above could pass vacuously if the cache were ignored; it is not.
    let m = model(7);
    let toks = tokens(20, 3);
    let (mut a, _) = m.prefill(&toks[..19]).unwrap();
    let (mut b, _) = m.prefill(&tokens(19, 99)).unwrap();
    let la = m.forward(&toks[19..], &mut a, false).unwrap();
    let lb = m.forward(&toks[19..], &mut b, false).unwrap();
    assert!(max_diff(&la, &lb) > 1e-2);
}

#[test]
fn the_f16_safetensors_form_round_trips() {
    let cfg = LlamaConfig::tiny();
    let m = model(11);
    let toks = tokens(33, 5);
    let (cache, _) = m.prefill(&toks[..32]).unwrap();
    let meta = CacheMeta {
        model_id: "tiny@test".into(),
        tokenizer_hash: "t".into(),
        token_count: 32,
        memory_ids: vec!["a".into(), "b".into()],
        text_hash: "h".into(),
    };
    let bytes = cache.to_safetensors(&cfg, &meta).unwrap();
    // f16: 2 layers × (K + V) × 2 KV heads × 32 tokens × 16 dims × 2 bytes, plus the header.
    let tensor_bytes = cfg.cache_bytes_per_token() * 32;
    assert_eq!(tensor_bytes, 2 * 2 * 2 * 32 * 16 * 2);
    assert!(bytes.len() > tensor_bytes && bytes.len() < tensor_bytes + 4096);
    let (back, got) = KvCache::from_safetensors(&bytes, &cfg).unwrap();
    assert_eq!(got, meta);
    assert_eq!(activation::cache::read_meta(&bytes).unwrap(), meta);
    let d = back.max_abs_diff(&cache).unwrap();
    assert!(d > 0.0 && d < 5e-3, "f16 round trip differs by {d}");
    // Decoding from the f16 cache stays close to decoding from the f32 one.
    let mut c32 = cache.clone();
    let mut c16 = back;
    let a = m.forward(&toks[32..], &mut c32, false).unwrap();
    let b = m.forward(&toks[32..], &mut c16, false).unwrap();
    assert!(max_diff(&a, &b) < 2e-2);
    assert_eq!(argmax(&a).unwrap(), argmax(&b).unwrap());

    // A cache for another shape is refused with a reason.
    let mut other = cfg.clone();
    other.num_kv_heads = 4;
    match KvCache::from_safetensors(&bytes, &other) {
        Err(ActivationError::Cache(m)) => assert!(m.contains("expected"), "{m}"),
        other => panic!("expected a cache error, got {other:?}"),
    }
    assert!(matches!(
        KvCache::from_safetensors(b"not safetensors", &cfg),
        Err(ActivationError::Cache(_))
    ));
}

#[test]
fn bad_input_is_refused() {
    let m = model(1);
    let mut c = KvCache::new(2);
    assert!(matches!(
        m.forward(&[], &mut c, false),
        Err(ActivationError::Invalid(_))
    ));
    match m.forward(&[5, 300], &mut c, false) {
        Err(ActivationError::Invalid(msg)) => assert!(msg.contains("300"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let long = vec![1u32; 513];
    assert!(matches!(
        m.forward(&long, &mut c, false),
        Err(ActivationError::Invalid(_))
    ));
    // Nothing was appended by the failed calls.
    assert_eq!(c.len(), 0);
    let mut wrong = KvCache::new(3);
    assert!(matches!(
        m.forward(&[1], &mut wrong, false),
        Err(ActivationError::Cache(_))
    ));
}

/// CI sets `MEMOS_REQUIRE_NVRTC=1` (`./dev test` puts the NVRTC wheel on `LD_LIBRARY_PATH`)
/// so this cannot pass by skipping there; elsewhere a missing library is a visible skip.
#[test]
fn every_kernel_compiles_with_nvrtc() {
    if !activation::testing::skip_unless(
        activation::cuda::nvrtc_available(),
        "activation::tiny::every_kernel_compiles_with_nvrtc",
        "libnvrtc not found on LD_LIBRARY_PATH",
        "MEMOS_REQUIRE_NVRTC",
    ) {
        return;
    }
    let ptx = activation::cuda::compile_kernels().expect("the kernels compile");
    let src = ptx.to_src();
    for k in activation::cuda::KERNEL_NAMES {
        assert!(
            src.contains(&format!(".entry {k}(")),
            "{k} missing from the PTX"
        );
    }
}

/// Runs wherever a CUDA driver and GPU exist; elsewhere a visible skip (`MEMOS_REQUIRE_CUDA=1`
/// makes it fail instead).
#[test]
fn cuda_prefill_matches_the_cpu_reference() {
    if !activation::testing::skip_unless(
        activation::cuda::available(),
        "activation::tiny::cuda_prefill_matches_the_cpu_reference",
        "no CUDA driver or GPU",
        "MEMOS_REQUIRE_CUDA",
    ) {
        return;
    }
    let w = Weights::random(&LlamaConfig::tiny(), 5).unwrap();
    let cpu = CpuModel::new(w.clone()).unwrap();
    let gpu = activation::cuda::CudaModel::new(&w).unwrap();
    let toks = tokens(70, 9);
    let (c_cpu, l_cpu) = cpu.prefill(&toks).unwrap();
    let (c_gpu, l_gpu) = gpu.prefill(&toks).unwrap();
    let d = c_cpu.max_abs_diff(&c_gpu).unwrap();
    assert!(d <= 1e-3, "CUDA K/V differ from the CPU by {d}");
    let l_cpu = l_cpu.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ld = l_cpu
        .iter()
        .zip(&l_gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(ld <= 1e-3, "CUDA logits differ by {ld}");
    // Decode on the GPU on top of a GPU prefix equals the CPU too.
    let mut gc = gpu.new_cache(80).unwrap();
    gpu.forward(&toks[..60], &mut gc).unwrap();
    let step = gpu.forward(&toks[60..], &mut gc).unwrap();
    let cd = step
        .iter()
        .zip(&l_cpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(cd <= 1e-3, "chunked CUDA logits differ by {cd}");
}
