// Element-wise, per-row and per-column kernels of the CUDA backend, compiled at run time by NVRTC.
//
// Invariant: every kernel gives the bits of the CPU code it mirrors (named above each one). To keep
// that true:
//   - one thread per element, per row or per column; a thread that loops over a row or a column
//     visits it in the CPU's order, so no reduction is ever reassociated; a row statistic is
//     summed in the eight lanes of lanes.rs (PS_LANE_ADD, ps_lanes_sum);
//   - every expression has the CPU expression's association (`a * b * c` is `(a * b) * c`, Rust's
//     `a -= b` is `a = a - b`), and the host compiles with fmad=false, prec-div=true,
//     prec-sqrt=true, ftz=false, so each + - * / and sqrtf is one IEEE round to nearest even;
//   - Rust's `Iterator::sum::<f32>()` and each lane fold from -0.0, so the sums written for them
//     start at -0.0f; the CPU loops that start from `Tensor::zeros` start at 0.0f;
//   - no header is included (NVRTC has none of the standard ones), and nothing is shared between
//     threads: no shared memory, no barriers, no read-modify-write of another thread's data, no
//     warp intrinsics; the only intrinsics are __float_as_uint and __uint_as_float.
// The same file compiles as C with `cpu_shim.h`, and the tests in `stages/src/cuda/emulate/`
// run every kernel over an emulated grid against the CPU code.

// ---- helpers ---------------------------------------------------------------------------------

// The SplitMix64 increment (rng.rs `GAMMA`).
#define PS_GAMMA 0x9E3779B97F4A7C15ull

// rng.rs `mix64`.
static __device__ __forceinline__ unsigned long long ps_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// gelu.rs `exp_approx`: range reduction by ln 2 and a degree-7 polynomial. The constants are
// given by their bits so that no decimal parsing stands between them and the Rust values.
static __device__ __forceinline__ float ps_exp_approx(float x) {
    const float log2_e = __uint_as_float(0x3FB8AA3Bu);  // 1.442695 (f32 LOG2_E)
    const float ln2_hi = __uint_as_float(0x3F317200u);  // 0.69314575
    const float ln2_lo = __uint_as_float(0x35BFBE8Eu);  // 1.4286068e-6
    const float round = 12582912.0f;                     // 1.5 * 2^23
    // f32::clamp: a NaN passes through.
    if (x < -87.0f) x = -87.0f;
    if (x > 88.0f) x = 88.0f;
    float n = (x * log2_e + round) - round;
    float r = (x - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    // n is an integer in [-126, 127] for finite x; NaN x leaves p NaN whatever the scale.
    int e = (n == n) ? (int)n : 0;
    return p * __uint_as_float(((unsigned int)(e + 127)) << 23);
}

// lanes.rs: element j of a row is added into lane j % 8, each lane starting from -0.0f and adding
// in order; ps_lanes_sum combines the lanes pairwise.
#define PS_LANES 8
#define PS_LANES_INIT {-0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f}
#define PS_LANE_ADD(lane, j, term) ((lane)[(j) % PS_LANES] = (lane)[(j) % PS_LANES] + (term))
static __device__ __forceinline__ float ps_lanes_sum(const float* l) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// gelu.rs `gate`: sigma(2 z(x)).
static __device__ __forceinline__ float ps_gate(float x) {
    const float sqrt_2_over_pi = __uint_as_float(0x3F4C422Au);  // 0.7978846
    const float cubic = __uint_as_float(0x3D372713u);           // 0.044715
    float z = sqrt_2_over_pi * (x + cubic * x * x * x);
    return 1.0f / (1.0f + ps_exp_approx(-2.0f * z));
}

// ---- tensor arithmetic -----------------------------------------------------------------------

// tensor.rs `Tensor::add_assign`.
extern "C" __global__ void k_add_assign(float* a, const float* b, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    a[i] = a[i] + b[i];
}

// linear.rs `Linear::forward`, the bias row added to every row.
extern "C" __global__ void k_add_bias(float* y, const float* bias, unsigned int rows, unsigned int cols) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    y[i] = y[i] + bias[i % cols];
}

// tensor.rs `Tensor::column_sums`: one thread per column, rows top to bottom, from 0.0.
extern "C" __global__ void k_column_sums(const float* x, float* out, unsigned int rows, unsigned int cols) {
    unsigned int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (unsigned int r = 0; r < rows; r++) s = s + x[(unsigned long long)r * cols + c];
    out[c] = s;
}

// loss.rs MSE: the difference `pred - target`.
extern "C" __global__ void k_sub(const float* a, const float* b, float* out, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = a[i] - b[i];
}

// loss.rs MSE: `diff.iter().map(|d| d * d).sum()`. Launched with one thread.
extern "C" __global__ void k_sum_squares(const float* x, float* out, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 1) return;
    float s = -0.0f;
    for (unsigned int k = 0; k < n; k++) s = s + x[k] * x[k];
    out[0] = s;
}

// loss.rs cross-entropy: `total += row loss` from 0.0 in row order, then `total / rows`, so the
// loss stays on the GPU. Launched with one thread.
extern "C" __global__ void k_mean(const float* x, float* out, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 1) return;
    float s = 0.0f;
    for (unsigned int k = 0; k < n; k++) s = s + x[k];
    out[0] = s / (float)n;
}

// `x /= divisor` (loss.rs MSE: the sum of squares over the element count).
extern "C" __global__ void k_divide(float* x, unsigned int n, float divisor) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    x[i] = x[i] / divisor;
}

// `x *= factor` (loss.rs MSE backward).
extern "C" __global__ void k_scale(float* x, unsigned int n, float factor) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    x[i] = x[i] * factor;
}

// ---- layers ----------------------------------------------------------------------------------

// gelu.rs `gelu`.
extern "C" __global__ void k_gelu_forward(const float* x, float* y, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    y[i] = v * ps_gate(v);
}

// gelu.rs `gelu_backward`, over dy in place.
extern "C" __global__ void k_gelu_backward(const float* x, float* dy, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float sqrt_2_over_pi = __uint_as_float(0x3F4C422Au);
    const float cubic = __uint_as_float(0x3D372713u);
    float v = x[i];
    float s = ps_gate(v);
    float dz = sqrt_2_over_pi * (1.0f + 3.0f * cubic * v * v);
    dy[i] = dy[i] * (s + 2.0f * v * s * (1.0f - s) * dz);
}

// dropout.rs `Dropout::apply`: `key` is the stream's `Stream::key()`, `scale` = 1 / (1 - rate).
extern "C" __global__ void k_dropout(float* t, unsigned int n, unsigned long long key, float rate, float scale) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned long long bits = ps_mix64(key + ((unsigned long long)i + 1ull) * PS_GAMMA);
    // rng.rs `Stream::uniform`: the top 24 bits times 2^-24, both exact.
    float u = (float)(unsigned int)(bits >> 40) * (1.0f / 16777216.0f);
    t[i] = (u >= rate) ? t[i] * scale : 0.0f;
}

// norm.rs `LayerNorm::forward`: one thread per row.
extern "C" __global__ void k_layer_norm_forward(const float* x, const float* gamma, const float* beta, float* y,
                                                float* xhat, float* rstd, unsigned int rows, unsigned int cols,
                                                float eps) {
    unsigned int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* row = x + (unsigned long long)r * cols;
    float* xh = xhat + (unsigned long long)r * cols;
    float* yr = y + (unsigned long long)r * cols;
    float w = (float)cols;
    float sum[PS_LANES] = PS_LANES_INIT;
    for (unsigned int j = 0; j < cols; j++) PS_LANE_ADD(sum, j, row[j]);
    float mean = ps_lanes_sum(sum) / w;
    float sq[PS_LANES] = PS_LANES_INIT;
    for (unsigned int j = 0; j < cols; j++) PS_LANE_ADD(sq, j, (row[j] - mean) * (row[j] - mean));
    float var = ps_lanes_sum(sq) / w;
    float s = 1.0f / sqrtf(var + eps);
    rstd[r] = s;
    for (unsigned int j = 0; j < cols; j++) xh[j] = (row[j] - mean) * s;
    for (unsigned int j = 0; j < cols; j++) yr[j] = xh[j] * gamma[j] + beta[j];
}

// norm.rs `LayerNorm::backward_input`: one thread per row; d_j = dy_j * gamma_j is recomputed
// where the CPU reads it from a buffer (same bits).
extern "C" __global__ void k_layer_norm_backward_input(const float* xhat, const float* rstd, const float* gamma,
                                                       const float* dy, float* dx, unsigned int rows,
                                                       unsigned int cols) {
    unsigned int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* xh = xhat + (unsigned long long)r * cols;
    const float* g = dy + (unsigned long long)r * cols;
    float* o = dx + (unsigned long long)r * cols;
    float w = (float)cols;
    float sum_d[PS_LANES] = PS_LANES_INIT;
    for (unsigned int j = 0; j < cols; j++) PS_LANE_ADD(sum_d, j, g[j] * gamma[j]);
    float mean_d = ps_lanes_sum(sum_d) / w;
    float sum_dx[PS_LANES] = PS_LANES_INIT;
    for (unsigned int j = 0; j < cols; j++) PS_LANE_ADD(sum_dx, j, (g[j] * gamma[j]) * xh[j]);
    float mean_dx = ps_lanes_sum(sum_dx) / w;
    float s = rstd[r];
    for (unsigned int j = 0; j < cols; j++) o[j] = s * (g[j] * gamma[j] - mean_d - xh[j] * mean_dx);
}

// norm.rs `LayerNorm::weight_grads`, dgamma: one thread per column, rows top to bottom, from 0.0.
extern "C" __global__ void k_layer_norm_gamma_grad(const float* xhat, const float* dy, float* dgamma,
                                                   unsigned int rows, unsigned int cols) {
    unsigned int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (unsigned int r = 0; r < rows; r++) {
        unsigned long long k = (unsigned long long)r * cols + c;
        s = s + dy[k] * xhat[k];
    }
    dgamma[c] = s;
}

// ---- attention and embeddings ---------------------------------------------------------------

// Attention scores and probabilities are [rows, heads * seq]: segment i (seq values) is head
// i % heads of row i / heads, which is token (i / heads) % seq of its sequence.

// host.rs `causal_softmax`: one thread per segment; the first (token + 1) values, times `scale`,
// become probabilities, the rest 0.
extern "C" __global__ void k_causal_softmax(float* s, unsigned int segments, unsigned int heads, unsigned int seq,
                                            float scale) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= segments) return;
    float* v = s + (unsigned long long)i * seq;
    unsigned int past = (i / heads) % seq + 1u;
    float max = -__uint_as_float(0x7F800000u);
    for (unsigned int j = 0; j < past; j++) max = fmaxf(max, v[j] * scale);
    float sum[PS_LANES] = PS_LANES_INIT;
    for (unsigned int j = 0; j < past; j++) {
        v[j] = ps_exp_approx(v[j] * scale - max);
        PS_LANE_ADD(sum, j, v[j]);
    }
    float inv = 1.0f / ps_lanes_sum(sum);
    for (unsigned int j = 0; j < past; j++) v[j] = v[j] * inv;
    for (unsigned int j = past; j < seq; j++) v[j] = 0.0f;
}

// host.rs `causal_softmax_backward`, over g in place: one thread per segment.
extern "C" __global__ void k_causal_softmax_backward(const float* p, float* g, unsigned int segments,
                                                     unsigned int seq, float scale) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= segments) return;
    const float* pr = p + (unsigned long long)i * seq;
    float* gr = g + (unsigned long long)i * seq;
    float lanes[PS_LANES] = PS_LANES_INIT;
    for (unsigned int j = 0; j < seq; j++) PS_LANE_ADD(lanes, j, gr[j] * pr[j]);
    float dot = ps_lanes_sum(lanes);
    for (unsigned int j = 0; j < seq; j++) gr[j] = pr[j] * (gr[j] - dot) * scale;
}

// host.rs `causal_dropout`: k_dropout's mask on the causal past, 0 in the future; one thread per
// element of [rows, cols] (cols = heads * seq).
extern "C" __global__ void k_causal_dropout(float* t, unsigned int rows, unsigned int cols, unsigned int seq,
                                            unsigned long long key, float rate, float scale) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    if ((i % cols) % seq > (i / cols) % seq) {
        t[i] = 0.0f;
        return;
    }
    unsigned long long bits = ps_mix64(key + ((unsigned long long)i + 1ull) * PS_GAMMA);
    float u = (float)(unsigned int)(bits >> 40) * (1.0f / 16777216.0f);
    t[i] = (u >= rate) ? t[i] * scale : 0.0f;
}

// Whether an id read as float is a whole number in 0..vocab.
static __device__ __forceinline__ bool ps_token(float t, unsigned int vocab) {
    return t >= 0.0f && t < (float)vocab && (float)(unsigned int)t == t;
}

// host.rs `embedding`: one thread per output element; an invalid id gives NaN.
extern "C" __global__ void k_embedding(const float* ids, const float* tokens, const float* positions, float* out,
                                       unsigned int rows, unsigned int width, unsigned int vocab, unsigned int seq) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * width) return;
    unsigned int r = i / width;
    unsigned int c = i % width;
    float t = ids[r];
    if (!ps_token(t, vocab)) {
        out[i] = __uint_as_float(0x7FC00000u);
        return;
    }
    out[i] = tokens[(unsigned long long)(unsigned int)t * width + c] + positions[(unsigned long long)(r % seq) * width + c];
}

// host.rs `embedding_grads`, the token table: one thread per column, which it zeroes and then
// adds the rows of dy into, in row order (rows with an invalid id are skipped).
extern "C" __global__ void k_embedding_token_grad(const float* ids, const float* dy, float* grad, unsigned int rows,
                                                  unsigned int width, unsigned int vocab) {
    unsigned int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= width) return;
    for (unsigned int v = 0; v < vocab; v++) grad[(unsigned long long)v * width + c] = 0.0f;
    for (unsigned int r = 0; r < rows; r++) {
        float t = ids[r];
        if (!ps_token(t, vocab)) continue;
        unsigned long long k = (unsigned long long)(unsigned int)t * width + c;
        grad[k] = grad[k] + dy[(unsigned long long)r * width + c];
    }
}

// host.rs `embedding_grads`, the position table: one thread per element (position, column),
// adding the rows of that position in row order from 0.
extern "C" __global__ void k_embedding_position_grad(const float* dy, float* grad, unsigned int rows,
                                                     unsigned int width, unsigned int seq) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= seq * width) return;
    unsigned int c = i % width;
    float s = 0.0f;
    for (unsigned int r = i / width; r < rows; r += seq) s = s + dy[(unsigned long long)r * width + c];
    grad[i] = s;
}

// ---- loss ------------------------------------------------------------------------------------

// loss.rs cross-entropy forward: one thread per row. Writes the softmax row and
// row_loss[r] = max + ln(sum) - x[target]; the host adds the row losses in order.
extern "C" __global__ void k_cross_entropy_forward(const float* logits, const float* target, float* probs,
                                                   float* row_loss, unsigned int rows, unsigned int cols) {
    unsigned int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* x = logits + (unsigned long long)r * cols;
    float* p = probs + (unsigned long long)r * cols;
    float max = -__uint_as_float(0x7F800000u);
    for (unsigned int j = 0; j < cols; j++) max = fmaxf(max, x[j]);
    for (unsigned int j = 0; j < cols; j++) p[j] = ps_exp_approx(x[j] - max);
    float lanes[PS_LANES] = PS_LANES_INIT;
    for (unsigned int j = 0; j < cols; j++) PS_LANE_ADD(lanes, j, p[j]);
    float sum = ps_lanes_sum(lanes);
    for (unsigned int j = 0; j < cols; j++) p[j] = p[j] / sum;
    // A target outside 0..cols (only possible for targets never seen by the host's check) reads
    // nothing and gives a NaN loss.
    float t = target[r];
    row_loss[r] = (t >= 0.0f && t < (float)cols) ? max + logf(sum) - x[(unsigned int)t] : __uint_as_float(0x7FC00000u);
}

// loss.rs cross-entropy backward: subtract 1 at the target class, then scale by `factor`.
extern "C" __global__ void k_cross_entropy_backward(float* probs, const float* target, unsigned int rows,
                                                    unsigned int cols, float factor) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    float g = probs[i];
    if (i % cols == (unsigned int)target[i / cols]) g = g - 1.0f;
    probs[i] = g * factor;
}

// ---- optimizers ------------------------------------------------------------------------------

// optim.rs `sgd_update`.
extern "C" __global__ void k_sgd_step(float* p, const float* g, float* v, unsigned int n, float lr, float momentum) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float vi = momentum * v[i] + g[i];
    v[i] = vi;
    p[i] = p[i] - lr * vi;
}

// optim.rs `adam_update`; c1, c2 are this step's bias corrections.
extern "C" __global__ void k_adam_step(float* p, const float* g, float* m, float* v, unsigned int n, float lr,
                                       float beta1, float beta2, float eps, float c1, float c2) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i];
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - lr * (mi / c1) / (sqrtf(vi / c2) + eps);
}

// ---- 16-bit conversions (the `half` crate's bits) --------------------------------------------

// Round to nearest even on a dropped field: `round` is its top bit, and the kept lowest bit is
// `round << 1`; round up iff the top dropped bit is set and (the rest of it, or the kept lowest
// bit, is).
static __device__ __forceinline__ bool ps_round_up(unsigned int bits, unsigned int round) {
    return (bits & round) != 0u && (bits & (3u * round - 1u)) != 0u;
}

// `half::bf16::from_f32`.
extern "C" __global__ void k_to_bf16(const float* x, unsigned short* y, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int b = __float_as_uint(x[i]);
    unsigned int h;
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) {
        h = (b >> 16) | 0x0040u;  // NaN stays NaN, made quiet
    } else {
        h = (b >> 16) + (ps_round_up(b, 0x8000u) ? 1u : 0u);
    }
    y[i] = (unsigned short)h;
}

// `half::bf16::to_f32`.
extern "C" __global__ void k_from_bf16(const unsigned short* x, float* y, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int h = x[i];
    if ((h & 0x7FFFu) > 0x7F80u) h = h | 0x0040u;  // NaN, made quiet
    y[i] = __uint_as_float(h << 16);
}

// `half::f16::from_f32`: round to nearest even, overflow to infinity, f16 subnormals.
extern "C" __global__ void k_to_f16(const float* x, unsigned short* y, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int b = __float_as_uint(x[i]);
    unsigned int sign = (b & 0x80000000u) >> 16;
    unsigned int exp = b & 0x7F800000u;
    unsigned int man = b & 0x007FFFFFu;
    unsigned int h;
    if (exp == 0x7F800000u) {
        // Infinity, or NaN kept NaN (quiet bit set) with the top of its payload.
        h = sign | 0x7C00u | (man != 0u ? 0x0200u : 0u) | (man >> 13);
    } else {
        int e = (int)(exp >> 23) - 127 + 15;
        if (e >= 0x1F) {
            h = sign | 0x7C00u;
        } else if (e <= 0) {
            if (14 - e > 24) {
                h = sign;  // below half the smallest subnormal
            } else {
                unsigned int m = man | 0x00800000u;
                unsigned int shift = (unsigned int)(14 - e);
                h = sign | ((m >> shift) + (ps_round_up(m, 1u << (shift - 1u)) ? 1u : 0u));
            }
        } else {
            // A carry out of the mantissa moves into the exponent, up to infinity: still right.
            h = (sign | ((unsigned int)e << 10) | (man >> 13)) + (ps_round_up(man, 0x1000u) ? 1u : 0u);
        }
    }
    y[i] = (unsigned short)h;
}

// `half::f16::to_f32`.
extern "C" __global__ void k_from_f16(const unsigned short* x, float* y, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int h = x[i];
    unsigned int sign = (h & 0x8000u) << 16;
    unsigned int exp = h & 0x7C00u;
    unsigned int man = h & 0x03FFu;
    unsigned int f;
    if ((h & 0x7FFFu) == 0u) {
        f = sign;
    } else if (exp == 0x7C00u) {
        f = man == 0u ? (sign | 0x7F800000u) : (sign | 0x7FC00000u | (man << 13));
    } else if (exp == 0u) {
        // Subnormal: shift the leading one up to the hidden bit, lowering the exponent.
        unsigned int e = 0u;
        while ((man & 0x0400u) == 0u) {
            man = man << 1;
            e = e + 1u;
        }
        f = sign | ((127u - 15u + 1u - e) << 23) | ((man & 0x03FFu) << 13);
    } else {
        f = sign | (((exp >> 10) - 15u + 127u) << 23) | (man << 13);
    }
    y[i] = __uint_as_float(f);
}
