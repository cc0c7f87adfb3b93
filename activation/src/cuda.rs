//! The CUDA prefill path: cudarc alone — kernels compiled at run time with NVRTC
//! (`kernels.cu`), cuBLAS for every matrix product (strided batched for attention).
//!
//! Every entry point first checks the driver library is present
//! ([`cudarc::driver::sys::is_culib_present`]): creating a context without a driver panics
//! instead of returning an error.

use std::sync::Arc;

use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use crate::cache::KvCache;
use crate::config::LlamaConfig;
use crate::cpu::{check_tokens, rope_tables};
use crate::error::{ActivationError, Result};
use crate::weights::Weights;

/// The kernels' CUDA C source.
pub const KERNELS: &str = include_str!("kernels.cu");

/// The kernels `KERNELS` defines.
pub const KERNEL_NAMES: [&str; 7] = [
    "embed_gather",
    "rms_norm",
    "rope_scatter",
    "causal_softmax",
    "silu_mul",
    "residual_add",
    "merge_heads",
];

const BLOCK: u32 = 256;

/// Launches a kernel on the model's stream with the given arguments.
macro_rules! launch {
    ($s:expr, $f:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let mut b = $s.stream.launch_builder($f);
        $( b.arg($arg); )+
        // SAFETY: every kernel bounds-checks its index against the sizes passed with it, and
        // the buffers were allocated with those sizes.
        unsafe { b.launch($cfg) }.map_err(cuda("launch"))?;
    }};
}

fn cuda<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> ActivationError {
    move |e| ActivationError::Cuda(format!("{what}: {e:?}"))
}

/// Whether the NVRTC library can be loaded (it needs no GPU).
pub fn nvrtc_available() -> bool {
    // SAFETY: only probes whether the shared library can be opened.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether a CUDA driver, NVRTC and cuBLAS are present and a device can be opened.
pub fn available() -> bool {
    // SAFETY: these only probe whether the shared libraries can be opened.
    let libs = unsafe {
        cudarc::driver::sys::is_culib_present()
            && cudarc::nvrtc::sys::is_culib_present()
            && cudarc::cublas::sys::is_culib_present()
    };
    libs && CudaContext::device_count().is_ok_and(|n| n > 0)
}

/// Compiles the kernels with NVRTC (no GPU needed).
pub fn compile_kernels() -> Result<Ptx> {
    if !nvrtc_available() {
        return Err(ActivationError::Cuda(
            "the NVRTC library (libnvrtc.so) was not found; put its directory on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    cudarc::nvrtc::compile_ptx(KERNELS).map_err(cuda("NVRTC compile"))
}

struct Kernels {
    embed_gather: CudaFunction,
    rms_norm: CudaFunction,
    rope_scatter: CudaFunction,
    causal_softmax: CudaFunction,
    silu_mul: CudaFunction,
    residual_add: CudaFunction,
    merge_heads: CudaFunction,
}

impl Kernels {
    fn load(module: &Arc<CudaModule>) -> Result<Self> {
        let f = |n: &str| module.load_function(n).map_err(cuda("load kernel"));
        Ok(Self {
            embed_gather: f("embed_gather")?,
            rms_norm: f("rms_norm")?,
            rope_scatter: f("rope_scatter")?,
            causal_softmax: f("causal_softmax")?,
            silu_mul: f("silu_mul")?,
            residual_add: f("residual_add")?,
            merge_heads: f("merge_heads")?,
        })
    }
}

struct GpuLayer {
    attn_norm: CudaSlice<f32>,
    wq: CudaSlice<f32>,
    wk: CudaSlice<f32>,
    wv: CudaSlice<f32>,
    wo: CudaSlice<f32>,
    ffn_norm: CudaSlice<f32>,
    w_gate: CudaSlice<f32>,
    w_up: CudaSlice<f32>,
    w_down: CudaSlice<f32>,
}

/// A KV cache in device memory: per layer `[kv_heads, capacity, head_dim]` keys and values.
pub struct CudaCache {
    k: Vec<CudaSlice<f32>>,
    v: Vec<CudaSlice<f32>>,
    /// Tokens held.
    pub len: usize,
    /// Tokens it can hold.
    pub capacity: usize,
}

/// The model's weights on a GPU and the kernels that run it.
pub struct CudaModel {
    config: LlamaConfig,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    k: Kernels,
    embed: CudaSlice<f32>,
    layers: Vec<GpuLayer>,
    final_norm: CudaSlice<f32>,
    lm_head: CudaSlice<f32>,
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
}

fn host(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// The scratch buffers of one forward pass.
struct Scratch {
    x: CudaSlice<f32>,
    hb: CudaSlice<f32>,
    q: CudaSlice<f32>,
    kt: CudaSlice<f32>,
    vt: CudaSlice<f32>,
    qh: CudaSlice<f32>,
    scores: CudaSlice<f32>,
    oh: CudaSlice<f32>,
    o: CudaSlice<f32>,
    proj: CudaSlice<f32>,
    gate: CudaSlice<f32>,
    up: CudaSlice<f32>,
}

/// The sizes of one forward pass, and the kernels' integer and float arguments.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    h: usize,
    hd: usize,
    nh: usize,
    nkv: usize,
    kvd: usize,
    inter: usize,
    rep: usize,
    total: usize,
    cap: usize,
    n_i: i32,
    h_i: i32,
    hd_i: i32,
    nh_i: i32,
    nkv_i: i32,
    off_i: i32,
    cap_i: i32,
    total_i: i32,
    eps: f32,
    scale: f32,
}

fn grid(len: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((len as u32).div_ceil(BLOCK), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One column-major GEMM per KV group (`batch` of them): `(op_a, m, n, k)` with B untransposed,
/// leading dimensions `(lda, ldb, ldc)` and batch strides `(a, b, c)`, all in elements.
fn per_group(
    (transa, m, n, k): (cudarc::cublas::sys::cublasOperation_t, usize, usize, usize),
    (lda, ldb, ldc): (usize, usize, usize),
    (sa, sb, sc): (usize, usize, usize),
    batch: usize,
) -> StridedBatchedConfig<f32> {
    StridedBatchedConfig {
        gemm: GemmConfig {
            transa,
            transb: CUBLAS_OP_N,
            m: m as i32,
            n: n as i32,
            k: k as i32,
            alpha: 1.0,
            lda: lda as i32,
            ldb: ldb as i32,
            beta: 0.0,
            ldc: ldc as i32,
        },
        batch_size: batch as i32,
        stride_a: sa as i64,
        stride_b: sb as i64,
        stride_c: sc as i64,
    }
}

fn rows(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: BLOCK * 4,
    }
}

impl CudaModel {
    /// Uploads `weights` to device 0 and compiles the kernels.
    pub fn new(weights: &Weights) -> Result<Self> {
        if !available() {
            return Err(ActivationError::Cuda(
                "no CUDA driver, NVRTC, cuBLAS or device is available".into(),
            ));
        }
        let ctx = CudaContext::new(0).map_err(cuda("context"))?;
        let stream = ctx.default_stream();
        let module = ctx
            .load_module(compile_kernels()?)
            .map_err(cuda("load module"))?;
        let k = Kernels::load(&module)?;
        let blas = CudaBlas::new(stream.clone()).map_err(cuda("cuBLAS"))?;
        let up = |t: &candle_core::Tensor| -> Result<CudaSlice<f32>> {
            stream.clone_htod(&host(t)?).map_err(cuda("upload"))
        };
        let mut layers = Vec::with_capacity(weights.layers.len());
        for l in &weights.layers {
            layers.push(GpuLayer {
                attn_norm: up(&l.attn_norm)?,
                wq: up(&l.wq)?,
                wk: up(&l.wk)?,
                wv: up(&l.wv)?,
                wo: up(&l.wo)?,
                ffn_norm: up(&l.ffn_norm)?,
                w_gate: up(&l.w_gate)?,
                w_up: up(&l.w_up)?,
                w_down: up(&l.w_down)?,
            });
        }
        let (cos, sin) = rope_tables(&weights.config);
        Ok(Self {
            config: weights.config.clone(),
            embed: up(&weights.embed)?,
            final_norm: up(&weights.final_norm)?,
            lm_head: up(&weights.lm_head)?,
            cos: stream.clone_htod(&cos).map_err(cuda("upload"))?,
            sin: stream.clone_htod(&sin).map_err(cuda("upload"))?,
            layers,
            k,
            blas,
            stream,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// An empty device cache for up to `capacity` tokens.
    pub fn new_cache(&self, capacity: usize) -> Result<CudaCache> {
        let c = &self.config;
        let capacity = capacity.min(c.max_positions);
        let size = c.num_kv_heads * capacity * c.head_dim();
        let mut k = Vec::with_capacity(c.num_layers);
        let mut v = Vec::with_capacity(c.num_layers);
        for _ in 0..c.num_layers {
            k.push(
                self.stream
                    .alloc_zeros::<f32>(size)
                    .map_err(cuda("alloc"))?,
            );
            v.push(
                self.stream
                    .alloc_zeros::<f32>(size)
                    .map_err(cuda("alloc"))?,
            );
        }
        Ok(CudaCache {
            k,
            v,
            len: 0,
            capacity,
        })
    }

    /// `y[n, out] = x[n, in] · w[out, in]ᵀ` (row-major, via column-major cuBLAS).
    fn linear<X: DevicePtr<f32>, W: DevicePtr<f32>, Y: DevicePtrMut<f32>>(
        &self,
        x: &X,
        w: &W,
        y: &mut Y,
        n: usize,
        din: usize,
        dout: usize,
    ) -> Result<()> {
        let cfg = GemmConfig {
            transa: CUBLAS_OP_T,
            transb: CUBLAS_OP_N,
            m: dout as i32,
            n: n as i32,
            k: din as i32,
            alpha: 1.0f32,
            lda: din as i32,
            ldb: din as i32,
            beta: 0.0f32,
            ldc: dout as i32,
        };
        // SAFETY: the buffers hold n·din, dout·din and n·dout elements (checked by callers'
        // allocation sizes).
        unsafe { self.blas.gemm(cfg, w, x, y) }.map_err(cuda("gemm"))
    }

    /// One decoder block over the pass's tokens: attention, then the MLP.
    fn layer(
        &self,
        li: usize,
        w: &GpuLayer,
        sc: &mut Scratch,
        cache: &mut CudaCache,
        d: &Dims,
    ) -> Result<()> {
        self.attention(li, w, sc, cache, d)?;
        self.mlp(w, sc, d)
    }

    /// Self-attention with its residual: projections, then attention over the cache.
    fn attention(
        &self,
        li: usize,
        w: &GpuLayer,
        sc: &mut Scratch,
        cache: &mut CudaCache,
        d: &Dims,
    ) -> Result<()> {
        self.project_qkv(li, w, sc, cache, d)?;
        self.attend(li, w, sc, cache, d)
    }

    /// Q, K and V of the tokens, RoPE applied: Q into `[heads, n, hd]`, K and V into the cache
    /// rows `offset..total`.
    fn project_qkv(
        &self,
        li: usize,
        w: &GpuLayer,
        sc: &mut Scratch,
        cache: &mut CudaCache,
        d: &Dims,
    ) -> Result<()> {
        let Dims {
            n,
            h,
            kvd,
            n_i,
            h_i,
            hd_i,
            nh_i,
            nkv_i,
            off_i,
            cap_i,
            eps,
            ..
        } = *d;
        let (zero, one) = (0i32, 1i32);
        launch!(
            self,
            &self.k.rms_norm,
            rows(n),
            &sc.x,
            &w.attn_norm,
            &mut sc.hb,
            &h_i,
            &eps
        );
        self.linear(&sc.hb, &w.wq, &mut sc.q, n, h, h)?;
        self.linear(&sc.hb, &w.wk, &mut sc.kt, n, h, kvd)?;
        self.linear(&sc.hb, &w.wv, &mut sc.vt, n, h, kvd)?;
        // Q → [heads, n, hd] with RoPE; K (RoPE) and V → the cache rows offset..total.
        launch!(
            self,
            &self.k.rope_scatter,
            grid(n * h),
            &sc.q,
            &h_i,
            &mut sc.qh,
            &n_i,
            &self.cos,
            &self.sin,
            &n_i,
            &nh_i,
            &hd_i,
            &off_i,
            &zero,
            &one
        );
        let kvd_i = kvd as i32;
        let kc = &mut cache.k[li];
        launch!(
            self,
            &self.k.rope_scatter,
            grid(n * kvd),
            &sc.kt,
            &kvd_i,
            kc,
            &cap_i,
            &self.cos,
            &self.sin,
            &n_i,
            &nkv_i,
            &hd_i,
            &off_i,
            &off_i,
            &one
        );
        let vc = &mut cache.v[li];
        launch!(
            self,
            &self.k.rope_scatter,
            grid(n * kvd),
            &sc.vt,
            &kvd_i,
            vc,
            &cap_i,
            &self.cos,
            &self.sin,
            &n_i,
            &nkv_i,
            &hd_i,
            &off_i,
            &off_i,
            &zero
        );
        Ok(())
    }

    /// Scores against every cached key, causal softmax, the weighted values, the output
    /// projection and the residual.
    fn attend(
        &self,
        li: usize,
        w: &GpuLayer,
        sc: &mut Scratch,
        cache: &mut CudaCache,
        d: &Dims,
    ) -> Result<()> {
        let Dims {
            n,
            h,
            hd,
            nh,
            nkv,
            rep,
            total,
            cap,
            n_i,
            hd_i,
            nh_i,
            off_i,
            total_i,
            scale,
            ..
        } = *d;
        // Scores per KV group g: S_g[rep·n, total] = Q_g[rep·n, hd] · K_g[total, hd]ᵀ.
        let cfg = per_group(
            (CUBLAS_OP_T, total, rep * n, hd),
            (hd, hd, total),
            (cap * hd, rep * n * hd, rep * n * total),
            nkv,
        );
        // SAFETY: K holds nkv·cap·hd, Q nh·n·hd, scores nh·n·total elements.
        unsafe {
            self.blas
                .gemm_strided_batched(cfg, &cache.k[li], &sc.qh, &mut sc.scores)
        }
        .map_err(cuda("attention scores"))?;
        launch!(
            self,
            &self.k.causal_softmax,
            rows(nh * n),
            &mut sc.scores,
            &n_i,
            &total_i,
            &off_i,
            &scale
        );
        // O_g[rep·n, hd] = P_g[rep·n, total] · V_g[total, hd].
        let cfg = per_group(
            (CUBLAS_OP_N, hd, rep * n, total),
            (hd, total, hd),
            (cap * hd, rep * n * total, rep * n * hd),
            nkv,
        );
        // SAFETY: V holds nkv·cap·hd, P nh·n·total, O nh·n·hd elements.
        unsafe {
            self.blas
                .gemm_strided_batched(cfg, &cache.v[li], &sc.scores, &mut sc.oh)
        }
        .map_err(cuda("attention values"))?;
        launch!(
            self,
            &self.k.merge_heads,
            grid(n * h),
            &sc.oh,
            &mut sc.o,
            &nh_i,
            &n_i,
            &hd_i
        );
        self.linear(&sc.o, &w.wo, &mut sc.proj, n, h, h)?;
        let len = (n * h) as i32;
        launch!(
            self,
            &self.k.residual_add,
            grid(n * h),
            &mut sc.x,
            &sc.proj,
            &len
        );
        Ok(())
    }

    /// The gated MLP with its residual.
    fn mlp(&self, w: &GpuLayer, sc: &mut Scratch, d: &Dims) -> Result<()> {
        let Dims {
            n,
            h,
            inter,
            h_i,
            eps,
            ..
        } = *d;
        let len = (n * h) as i32;
        launch!(
            self,
            &self.k.rms_norm,
            rows(n),
            &sc.x,
            &w.ffn_norm,
            &mut sc.hb,
            &h_i,
            &eps
        );
        self.linear(&sc.hb, &w.w_gate, &mut sc.gate, n, h, inter)?;
        self.linear(&sc.hb, &w.w_up, &mut sc.up, n, h, inter)?;
        let ilen = (n * inter) as i32;
        launch!(
            self,
            &self.k.silu_mul,
            grid(n * inter),
            &mut sc.gate,
            &sc.up,
            &ilen
        );
        self.linear(&sc.gate, &w.w_down, &mut sc.proj, n, inter, h)?;
        launch!(
            self,
            &self.k.residual_add,
            grid(n * h),
            &mut sc.x,
            &sc.proj,
            &len
        );
        Ok(())
    }

    /// Runs `tokens` after the prefix in `cache`, writing their keys and values into it.
    /// Returns the last token's logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut CudaCache) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = tokens.len();
        let offset = cache.len;
        check_tokens(c, tokens, offset)?;
        if offset + n > cache.capacity {
            return Err(ActivationError::Invalid(format!(
                "{n} tokens after {offset} exceed the cache's capacity {}",
                cache.capacity
            )));
        }
        let (h, hd, nh, nkv) = (c.hidden_size, c.head_dim(), c.num_heads, c.num_kv_heads);
        let (kvd, inter, rep) = (c.kv_dim(), c.intermediate_size, nh / nkv);
        let total = offset + n;
        let cap = cache.capacity;
        let s = &self.stream;
        let alloc = |len: usize| s.alloc_zeros::<f32>(len).map_err(cuda("alloc"));
        let ids = s.clone_htod(tokens).map_err(cuda("upload"))?;
        let mut sc = Scratch {
            x: alloc(n * h)?,
            hb: alloc(n * h)?,
            q: alloc(n * h)?,
            kt: alloc(n * kvd)?,
            vt: alloc(n * kvd)?,
            qh: alloc(nh * n * hd)?,
            scores: alloc(nh * n * total)?,
            oh: alloc(nh * n * hd)?,
            o: alloc(n * h)?,
            proj: alloc(n * h)?,
            gate: alloc(n * inter)?,
            up: alloc(n * inter)?,
        };
        let d = Dims {
            n,
            h,
            hd,
            nh,
            nkv,
            kvd,
            inter,
            rep,
            total,
            cap,
            n_i: n as i32,
            h_i: h as i32,
            hd_i: hd as i32,
            nh_i: nh as i32,
            nkv_i: nkv as i32,
            off_i: offset as i32,
            cap_i: cap as i32,
            total_i: total as i32,
            eps: c.rms_eps,
            scale: 1.0f32 / (hd as f32).sqrt(),
        };
        let (n_i, h_i, eps) = (d.n_i, d.h_i, d.eps);
        launch!(
            self,
            &self.k.embed_gather,
            grid(n * h),
            &self.embed,
            &ids,
            &mut sc.x,
            &n_i,
            &h_i
        );
        for (li, w) in self.layers.iter().enumerate() {
            self.layer(li, w, &mut sc, cache, &d)?;
        }
        cache.len = total;
        // Logits of the last token only.
        let last = sc.x.slice((n - 1) * h..);
        let mut normed = alloc(h)?;
        launch!(
            self,
            &self.k.rms_norm,
            rows(1),
            &last,
            &self.final_norm,
            &mut normed,
            &h_i,
            &eps
        );
        let mut logits = alloc(c.vocab_size)?;
        self.linear(&normed, &self.lm_head, &mut logits, 1, h, c.vocab_size)?;
        s.clone_dtoh(&logits).map_err(cuda("download"))
    }

    /// Copies a device cache to the host.
    pub fn download(&self, cache: &CudaCache) -> Result<KvCache> {
        let c = &self.config;
        let (len, hd) = (cache.len, c.head_dim());
        let mut layers = Vec::with_capacity(c.num_layers);
        for (k, v) in cache.k.iter().zip(&cache.v) {
            let k = self.stream.clone_dtoh(k).map_err(cuda("download"))?;
            let v = self.stream.clone_dtoh(v).map_err(cuda("download"))?;
            // [kv_heads, capacity, hd] → [kv_heads, len, hd]
            let trim = |full: Vec<f32>| -> Vec<f32> {
                (0..c.num_kv_heads)
                    .flat_map(|g| {
                        let start = g * cache.capacity * hd;
                        full[start..start + len * hd].to_vec()
                    })
                    .collect()
            };
            layers.push((trim(k), trim(v)));
        }
        KvCache::from_host(c, len, layers)
    }

    /// Prefill: a fresh cache filled with `tokens`, copied to the host, and the last logits.
    pub fn prefill(&self, tokens: &[u32]) -> Result<(KvCache, Vec<f32>)> {
        let mut cache = self.new_cache(tokens.len())?;
        let logits = self.forward(tokens, &mut cache)?;
        Ok((self.download(&cache)?, logits))
    }

    /// Blocks until queued work finished (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda("synchronize"))
    }
}
