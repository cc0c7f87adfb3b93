// memos activation kernels, compiled at run time with NVRTC (no nvcc at build time).
// Row-major f32 throughout; matrix products go to cuBLAS.

extern "C" __global__ void embed_gather(const float* table, const unsigned int* ids, float* out,
                                        int n, int hidden) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * hidden) return;
    int t = i / hidden, c = i % hidden;
    out[i] = table[(size_t)ids[t] * hidden + c];
}

// One block per row: out = x / sqrt(mean(x^2) + eps) * w.
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, int cols,
                                    float eps) {
    extern __shared__ float buf[];
    const float* row = x + (size_t)blockIdx.x * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    float s = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += row[c] * row[c];
    buf[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) buf[threadIdx.x] += buf[threadIdx.x + k];
        __syncthreads();
    }
    float inv = rsqrtf(buf[0] / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = row[c] * inv * w[c];
}

// src: [n, heads*hd] (row stride ld); dst: [heads, cap, hd], rows dst_row0.. ; positions
// offset..offset+n. With rope != 0, applies rotary embeddings in the rotate-half layout.
extern "C" __global__ void rope_scatter(const float* src, int ld, float* dst, int cap,
                                        const float* cos_t, const float* sin_t, int n, int heads,
                                        int hd, int offset, int dst_row0, int rope) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * heads * hd) return;
    int d = i % hd, h = (i / hd) % heads, t = i / (hd * heads);
    const float* x = src + (size_t)t * ld + h * hd;
    float v = x[d];
    if (rope) {
        int half = hd / 2, pos = offset + t;
        if (d < half) {
            v = x[d] * cos_t[pos * half + d] - x[d + half] * sin_t[pos * half + d];
        } else {
            int j = d - half;
            v = x[d] * cos_t[pos * half + j] + x[j] * sin_t[pos * half + j];
        }
    }
    dst[((size_t)h * cap + dst_row0 + t) * hd + d] = v;
}

// One block per row of scores [heads*n, total]: row r is query r % n at position offset + r % n;
// keys after it are masked. Scales, then softmax in place.
extern "C" __global__ void causal_softmax(float* s, int n, int total, int offset, float scale) {
    extern __shared__ float buf[];
    int r = blockIdx.x;
    float* row = s + (size_t)r * total;
    int last = offset + (r % n);  // last visible key
    float m = __int_as_float(0xff800000);  // -inf (NVRTC has no math headers)
    for (int j = threadIdx.x; j <= last; j += blockDim.x) m = fmaxf(m, row[j] * scale);
    buf[threadIdx.x] = m;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) buf[threadIdx.x] = fmaxf(buf[threadIdx.x], buf[threadIdx.x + k]);
        __syncthreads();
    }
    m = buf[0];
    __syncthreads();
    float sum = 0.f;
    for (int j = threadIdx.x; j < total; j += blockDim.x) {
        float e = j <= last ? expf(row[j] * scale - m) : 0.f;
        row[j] = e;
        sum += e;
    }
    buf[threadIdx.x] = sum;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) buf[threadIdx.x] += buf[threadIdx.x + k];
        __syncthreads();
    }
    float inv = 1.f / buf[0];
    for (int j = threadIdx.x; j < total; j += blockDim.x) row[j] *= inv;
}

// gate = silu(gate) * up, in place.
extern "C" __global__ void silu_mul(float* gate, const float* up, int len) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    float g = gate[i];
    gate[i] = g / (1.f + expf(-g)) * up[i];
}

// Residual: x += y.
extern "C" __global__ void residual_add(float* x, const float* y, int len) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    x[i] += y[i];
}

// [heads, n, hd] -> [n, heads*hd].
extern "C" __global__ void merge_heads(const float* src, float* dst, int heads, int n, int hd) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= heads * n * hd) return;
    int d = i % hd, t = (i / hd) % n, h = i / (hd * n);
    dst[((size_t)t * heads + h) * hd + d] = src[i];
}
