// Gated DeltaNet kernels of the GPU backend (see gdn_kernels.hpp). The chunk-64 form runs in two
// kernels: chunk_prepare (every chunk of every value head at once: decays, the strictly lower
// products A = (k beta) k^T and q k^T, the forward substitution (I + A) [U | W] = [v beta |
// k beta e^g]) and chunk_scan (per value head and 32 value columns, the chunks in order: the
// state S [dk, 32] in shared memory; value columns never mix, so the columns of a head run in
// separate blocks). The recurrent form keeps S [dk, 32] likewise, token by token.
#include "fp4kit/engine/cuda/gdn_kernels.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "fp4kit/engine/cuda/device.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine::cuda {
namespace {

constexpr int kChunk = 64;  // torch_chunk_gated_delta_rule's chunk_size
constexpr int kRows = 8;    // chunk_scan: threadIdx.y, rows of a chunk per thread column

unsigned blocks_for(size_t n, unsigned threads) {
  const size_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 1048576 ? 1048576 : b));
}

// Dynamic shared memory above the default 48 KiB must be asked for, up to the device's limit.
template <typename K>
void allow_shared(K kernel, size_t bytes, const char* what) {
  int dev = 0, limit = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    throw Error(std::string("CUDA ") + what + ": cannot query the shared memory limit");
  if (bytes > static_cast<size_t>(limit))
    throw Error(std::string("CUDA ") + what + ": the head sizes need " + std::to_string(bytes) +
                " bytes of shared memory per block, the device has " + std::to_string(limit));
  if (bytes > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(bytes)) != cudaSuccess)
    throw Error(std::string("CUDA ") + what + ": cannot enable " + std::to_string(bytes) +
                " bytes of shared memory");
}

__global__ void conv1d_silu_kernel(const float* x, size_t len, size_t channels, size_t stride,
                                   const float* w, size_t K, float* out) {
  const size_t total = len * channels;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < total;
       e += size_t(gridDim.x) * blockDim.x) {
    const size_t t = e / channels, c = e % channels;
    float s = 0.0f;
    for (size_t j = 0; j < K; ++j) {
      const size_t back = K - 1 - j;  // tap K-1 reads the current token
      if (t >= back) s += w[c * K + j] * x[(t - back) * stride + c];
    }
    out[e] = s / (1.0f + expf(-s));
  }
}

__global__ void gates_kernel(float* a, float* b, size_t rows, size_t heads, const float* A_log,
                             const float* dt_bias) {
  const size_t total = rows * heads;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < total;
       e += size_t(gridDim.x) * blockDim.x) {
    const size_t h = e % heads;
    const float x = a[e] + dt_bias[h];
    const float sp = x > 20.0f ? x : log1pf(expf(x));
    a[e] = -expf(A_log[h]) * sp;
    b[e] = 1.0f / (1.0f + expf(-b[e]));
  }
}

// One warp per (token, key head, q or k): x / sqrt(sum x^2 + 1e-6), the sum in double; q also
// times qscale. Output [nk, len, dk] (a head's tokens contiguous).
__global__ void l2norm_kernel(const float* q, const float* k, size_t stride, size_t len, int nk,
                              int dk, float qscale, float* qn, float* kn) {
  const size_t warps = len * size_t(nk) * 2;
  const int lane = threadIdx.x & 31;
  for (size_t w = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; w < warps;
       w += (size_t(gridDim.x) * blockDim.x) >> 5) {
    const bool is_q = (w & 1) == 0;
    const size_t tk = w >> 1, t = tk / nk, kh = tk % nk;
    const float* x = (is_q ? q : k) + t * stride + kh * dk;
    double ss = 0.0;
    for (int a = lane; a < dk; a += 32) ss += static_cast<double>(x[a]) * x[a];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float inv = 1.0f / sqrtf(static_cast<float>(ss) + 1e-6f);
    float* y = (is_q ? qn : kn) + (kh * len + t) * dk;
    for (int a = lane; a < dk; a += 32) {
      const float v = x[a] * inv;
      y[a] = is_q ? v * qscale : v;
    }
  }
}

// Block (chunk c, value head h), 256 threads. Writes U [nv, len, dv], W [nv, len, dk] (rows of
// the chunk), the cumulative log decays cum [nv, chunks, 64] and q k^T decay [nv, chunks, 64, 64]
// (lower triangle).
__global__ void chunk_prepare_kernel(const float* qn, const float* kn, const float* v,
                                     size_t v_stride, const float* g, const float* beta,
                                     size_t len, int nv, int group, int dk, int dv, float* U,
                                     float* W, float* cum_out, float* iqk_out) {
  extern __shared__ float sm[];
  constexpr int C = kChunk;
  const int ldk = dk + 1;  // padded: threads of a warp read rows j of ks at the same column
  float* ks = sm;               // [C][ldk]
  float* Ws = ks + C * ldk;     // [C][dk]
  float* Us = Ws + C * dk;      // [C][dv]
  float* A = Us + C * dv;       // [C][C]
  float* cum = A + C * C;       // [C]
  float* bt = cum + C;          // [C]
  float* ex = bt + C;           // [C]
  const int h = blockIdx.y, tid = threadIdx.x, nt = blockDim.x;
  const size_t c = blockIdx.x, c0 = c * C, nch = (len + C - 1) / C;
  const int n = static_cast<int>(min(size_t(C), len - c0));
  const size_t kh = static_cast<size_t>(h / group);
  const float* K = kn + (kh * len + c0) * dk;
  const float* Q = qn + (kh * len + c0) * dk;
  if (tid == 0) {
    float acc = 0.0f;  // padded rows add zero
    for (int i = 0; i < C; ++i) cum[i] = (acc += i < n ? g[(c0 + i) * nv + h] : 0.0f);
  }
  for (int i = tid; i < n; i += nt) bt[i] = beta[(c0 + i) * nv + h];
  __syncthreads();
  for (int i = tid; i < C; i += nt) {
    ex[i] = expf(cum[i]);
    cum_out[(size_t(h) * nch + c) * C + i] = cum[i];
  }
  __syncthreads();
  for (int e = tid; e < n * dk; e += nt) {
    const int i = e / dk, a = e % dk;
    const float kv = K[e];
    ks[i * ldk + a] = kv;
    Ws[e] = (kv * bt[i]) * ex[i];  // decayed k beta
  }
  for (int e = tid; e < n * dv; e += nt) {
    const int i = e / dv, cc = e % dv;
    Us[e] = v[(c0 + i) * v_stride + size_t(h) * dv + cc] * bt[i];  // v beta
  }
  __syncthreads();
  float* iqk = iqk_out + (size_t(h) * nch + c) * C * C;
  for (int p = tid; p < n * n; p += nt) {
    const int i = p / n, j = p % n;
    if (j > i) continue;
    const float* ki = ks + i * ldk;
    const float* kj = ks + j * ldk;
    const float* qi = Q + size_t(i) * dk;
    const float b = bt[i];
    float sa = 0.0f, sq = 0.0f;
    for (int a = 0; a < dk; ++a) {
      sa += (ki[a] * b) * kj[a];
      sq += qi[a] * kj[a];
    }
    const float decay = expf(cum[i] - cum[j]);
    A[i * C + j] = sa * decay;
    iqk[i * C + j] = sq * decay;
  }
  __syncthreads();
  // (I + strictly_lower(A)) X = B by forward substitution, one column of [U | W] per thread.
  for (int x = tid; x < dv + dk; x += nt) {
    float* col = x < dv ? Us + x : Ws + (x - dv);
    const int w = x < dv ? dv : dk;
    for (int i = 1; i < n; ++i) {
      float val = col[i * w];
      for (int j = 0; j < i; ++j) val -= A[i * C + j] * col[j * w];
      col[i * w] = val;
    }
  }
  __syncthreads();
  for (int e = tid; e < n * dv; e += nt) U[(size_t(h) * len + c0) * dv + e] = Us[e];
  for (int e = tid; e < n * dk; e += nt) W[(size_t(h) * len + c0) * dk + e] = Ws[e];
}

// Block (32 value columns, value head h), threads (32, kRows): the chunks in order. Per chunk:
// v_new = U - W S and o = (q e^cum) S for the chunk's rows, then o += (q k^T decay) v_new and
// S = S e^last + (k e^(last - cum))^T v_new.
__global__ void chunk_scan_kernel(const float* qn, const float* kn, const float* U, const float* W,
                                  const float* cumg, const float* iqkg, size_t len, int nv,
                                  int group, int dk, int dv, float* out) {
  extern __shared__ float sm[];
  constexpr int C = kChunk, R = kRows;
  float* S = sm;           // [dk][32]
  float* vn = S + dk * 32;  // [C][32]
  float* eq = vn + C * 32;  // [C]
  float* ek = eq + C;       // [C]
  const int tx = threadIdx.x, ty = threadIdx.y, h = blockIdx.y;
  const int col = blockIdx.x * 32 + tx;
  const bool valid = col < dv;
  const size_t kh = static_cast<size_t>(h / group), nch = (len + C - 1) / C;
  const size_t os = size_t(nv) * dv;
  for (int a = ty; a < dk; a += R) S[a * 32 + tx] = 0.0f;
  for (size_t c = 0; c < nch; ++c) {
    const size_t c0 = c * C;
    const int n = static_cast<int>(min(size_t(C), len - c0));
    const float* cum = cumg + (size_t(h) * nch + c) * C;
    const float last = cum[C - 1];
    const int lin = ty * 32 + tx;
    if (lin < C) {
      eq[lin] = expf(cum[lin]);
      ek[lin] = expf(last - cum[lin]);
    }
    __syncthreads();
    const float* Wc = W + (size_t(h) * len + c0) * dk;
    const float* Qc = qn + (kh * len + c0) * dk;
    const float* Uc = U + (size_t(h) * len + c0) * dv;
    float o_reg[C / R];
#pragma unroll
    for (int r = 0; r < C / R; ++r) {
      const int i = ty + R * r;
      o_reg[r] = 0.0f;
      if (i < n) {
        float vacc = 0.0f, oacc = 0.0f;
        const float e = eq[i];
        const float* wi = Wc + size_t(i) * dk;
        const float* qi = Qc + size_t(i) * dk;
        for (int a = 0; a < dk; ++a) {
          const float s = S[a * 32 + tx];
          vacc += wi[a] * s;
          oacc += (qi[a] * e) * s;
        }
        vn[i * 32 + tx] = (valid ? Uc[size_t(i) * dv + col] : 0.0f) - vacc;
        o_reg[r] = oacc;
      }
    }
    __syncthreads();
    const float* iqk = iqkg + (size_t(h) * nch + c) * C * C;
#pragma unroll
    for (int r = 0; r < C / R; ++r) {
      const int i = ty + R * r;
      if (i < n) {
        float o = o_reg[r];
        for (int j = 0; j <= i; ++j) o += iqk[i * C + j] * vn[j * 32 + tx];
        if (valid) out[(c0 + i) * os + size_t(h) * dv + col] = o;
      }
    }
    const float cd = expf(last);
    const float* Kc = kn + (kh * len + c0) * dk;
    for (int a = ty; a < dk; a += R) {
      float s = S[a * 32 + tx] * cd;
      for (int i = 0; i < n; ++i) s += (Kc[size_t(i) * dk + a] * ek[i]) * vn[i * 32 + tx];
      S[a * 32 + tx] = s;
    }
    __syncthreads();
  }
}

// Block (32 value columns, value head h), one warp: the recurrence token by token.
__global__ void recurrent_kernel(const float* qn, const float* kn, const float* v, size_t v_stride,
                                 const float* g, const float* beta, size_t len, int nv, int group,
                                 int dk, int dv, float* out) {
  extern __shared__ float sm[];
  float* S = sm;           // [dk][32]
  float* ks = S + dk * 32;  // [dk]
  float* qs = ks + dk;      // [dk]
  const int tx = threadIdx.x, h = blockIdx.y;
  const int col = blockIdx.x * 32 + tx;
  const bool valid = col < dv;
  const size_t kh = static_cast<size_t>(h / group), os = size_t(nv) * dv;
  for (int a = 0; a < dk; ++a) S[a * 32 + tx] = 0.0f;
  for (size_t t = 0; t < len; ++t) {
    for (int a = tx; a < dk; a += 32) {
      ks[a] = kn[(kh * len + t) * dk + a];
      qs[a] = qn[(kh * len + t) * dk + a];
    }
    __syncwarp();
    const float decay = expf(g[t * nv + h]), bt = beta[t * nv + h];
    float kv = 0.0f;
    for (int a = 0; a < dk; ++a) {
      const float s = S[a * 32 + tx] * decay;
      S[a * 32 + tx] = s;
      kv += s * ks[a];
    }
    const float vt = valid ? v[t * v_stride + size_t(h) * dv + col] : 0.0f;
    const float delta = (vt - kv) * bt;
    float o = 0.0f;
    for (int a = 0; a < dk; ++a) {
      const float s = S[a * 32 + tx] + ks[a] * delta;
      S[a * 32 + tx] = s;
      o += s * qs[a];
    }
    if (valid) out[t * os + size_t(h) * dv + col] = o;
    __syncwarp();
  }
}

}  // namespace

void causal_conv1d_silu(const float* x, size_t len, size_t channels, size_t stride,
                        const float* weight, size_t K, float* out, cudaStream_t s) {
  if (len == 0 || channels == 0) return;
  conv1d_silu_kernel<<<blocks_for(len * channels, 256), 256, 0, s>>>(x, len, channels, stride,
                                                                     weight, K, out);
  check_launch("causal_conv1d_silu");
}

void gdn_gates(float* a, float* b, size_t rows, size_t heads, const float* A_log,
               const float* dt_bias, cudaStream_t s) {
  if (rows * heads == 0) return;
  gates_kernel<<<blocks_for(rows * heads, 256), 256, 0, s>>>(a, b, rows, heads, A_log, dt_bias);
  check_launch("gdn_gates");
}

size_t gated_delta_scratch_floats(size_t len, int nk, int nv, int dk, int dv, bool chunked) {
  const size_t qk = 2 * len * size_t(nk) * dk;
  if (!chunked) return qk;
  const size_t nch = (len + kChunk - 1) / kChunk;
  return qk + len * size_t(nv) * (dv + dk) + size_t(nv) * nch * kChunk * (1 + kChunk);
}

void gated_delta_rule(const float* q, const float* k, size_t qk_stride, const float* v,
                      size_t v_stride, const float* g, const float* beta, size_t len, int nk,
                      int nv, int dk, int dv, bool chunked, float* out, float* scratch,
                      cudaStream_t s) {
  if (len == 0 || nv == 0) return;
  if (nk <= 0 || dk <= 0 || dv <= 0 || nv % nk != 0)
    throw Error("CUDA gated_delta_rule: " + std::to_string(nv) + " value heads are not a multiple "
                "of " + std::to_string(nk) + " key heads");
  const int group = nv / nk;
  const float qscale = 1.0f / std::sqrt(static_cast<float>(dk));  // as the CPU backend
  float* qn = scratch;
  float* kn = qn + len * size_t(nk) * dk;
  l2norm_kernel<<<blocks_for(len * size_t(nk) * 2 * 32, 256), 256, 0, s>>>(
      q, k, qk_stride, len, nk, dk, qscale, qn, kn);
  check_launch("gated_delta_rule (l2norm)");
  const dim3 cols_grid(static_cast<unsigned>((dv + 31) / 32), static_cast<unsigned>(nv));
  if (!chunked) {
    const size_t smem = (size_t(dk) * 32 + 2 * size_t(dk)) * sizeof(float);
    allow_shared(recurrent_kernel, smem, "gated_delta_rule (recurrent)");
    recurrent_kernel<<<cols_grid, 32, smem, s>>>(qn, kn, v, v_stride, g, beta, len, nv, group, dk,
                                                 dv, out);
    check_launch("gated_delta_rule (recurrent)");
    return;
  }
  const size_t nch = (len + kChunk - 1) / kChunk;
  float* U = kn + len * size_t(nk) * dk;
  float* W = U + len * size_t(nv) * dv;
  float* cum = W + len * size_t(nv) * dk;
  float* iqk = cum + size_t(nv) * nch * kChunk;
  const size_t prep_smem = (size_t(kChunk) * (dk + 1) + size_t(kChunk) * dk +
                            size_t(kChunk) * dv + size_t(kChunk) * kChunk + 3 * kChunk) *
                           sizeof(float);
  allow_shared(chunk_prepare_kernel, prep_smem, "gated_delta_rule (chunk prepare)");
  chunk_prepare_kernel<<<dim3(static_cast<unsigned>(nch), static_cast<unsigned>(nv)), 256,
                         prep_smem, s>>>(qn, kn, v, v_stride, g, beta, len, nv, group, dk, dv, U,
                                         W, cum, iqk);
  check_launch("gated_delta_rule (chunk prepare)");
  const size_t scan_smem = (size_t(dk) * 32 + size_t(kChunk) * 32 + 2 * kChunk) * sizeof(float);
  allow_shared(chunk_scan_kernel, scan_smem, "gated_delta_rule (chunk scan)");
  chunk_scan_kernel<<<cols_grid, dim3(32, kRows), scan_smem, s>>>(qn, kn, U, W, cum, iqk, len, nv,
                                                                  group, dk, dv, out);
  check_launch("gated_delta_rule (chunk scan)");
}

}  // namespace fp4kit::engine::cuda
