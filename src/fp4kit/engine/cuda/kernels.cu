// CUDA kernels of the engine's GPU backend (see kernels.hpp). Plain CUDA C++, no wgmma: the
// matrix products are cuBLAS's; these are the memory-bound and small parts of a layer.
#include "fp4kit/engine/cuda/kernels.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <type_traits>
#include <algorithm>
#include <cmath>
#include <string>

#include "fp4kit/engine/cuda/device.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine::cuda {
namespace {

unsigned blocks_for(size_t n, unsigned threads) {
  const size_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 1048576 ? 1048576 : b));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---------------------------------------------------------------- element-wise
template <typename T>
__global__ void to_f32_kernel(const T* src, size_t n, float* dst) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, float>) dst[i] = src[i];
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) dst[i] = __bfloat162float(src[i]);
    else dst[i] = __half2float(src[i]);
  }
}

__global__ void add_bias_kernel(float* y, size_t rows, size_t n, const float* bias) {
  const size_t total = rows * n;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total;
       i += size_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % n];
}

__global__ void silu_mul_kernel(float* g, const float* u, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float x = g[i];
    g[i] = x / (1.0f + expf(-x)) * u[i];
  }
}

__global__ void silu_glu_split_kernel(const float* gu, size_t rows, size_t inter, float* out) {
  const size_t total = rows * inter;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total;
       i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / inter, c = i % inter;
    const float g = gu[r * 2 * inter + c];
    out[i] = g / (1.0f + expf(-g)) * gu[r * 2 * inter + inter + c];
  }
}

__global__ void swiglu_interleaved_kernel(const float* gu, size_t rows, size_t inter, float alpha,
                                          float limit, float* out) {
  const size_t total = rows * inter;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total;
       i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / inter, c = i % inter;
    const float* row = gu + r * 2 * inter;
    const float g = fminf(row[2 * c], limit);
    const float u = fminf(fmaxf(row[2 * c + 1], -limit), limit);
    const float glu = g * (1.0f / (1.0f + expf(-(g * alpha))));
    out[i] = (u + 1.0f) * glu;
  }
}

__global__ void add_kernel(float* dst, const float* src, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

// ---------------------------------------------------------------- norms, RoPE
// One block of 256 threads per row.
__global__ void rms_norm_kernel(const float* x, size_t dim, const float* w, float w_offset,
                                float eps, float* out) {
  const size_t r = blockIdx.x;
  const float* xr = x + r * dim;
  double ss = 0.0;
  for (size_t i = threadIdx.x; i < dim; i += blockDim.x) ss += double(xr[i]) * xr[i];
  __shared__ double part[32];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    double t = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    if (threadIdx.x == 0) part[0] = t;
  }
  __syncthreads();
  const float var = static_cast<float>(part[0] / static_cast<double>(dim));
  const float inv = 1.0f / sqrtf(var + eps);
  float* o = out + r * dim;
  for (size_t i = threadIdx.x; i < dim; i += blockDim.x)
    o[i] = (w ? w_offset + w[i] : 1.0f) * (xr[i] * inv);
}

__global__ void rope_kernel(float* x, size_t rows, size_t stride, int heads, int hd, int half,
                            const int32_t* pos, const float* cs, const float* sn,
                            bool interleaved) {
  const size_t total = rows * size_t(heads) * half;
  for (size_t t = blockIdx.x * size_t(blockDim.x) + threadIdx.x; t < total;
       t += size_t(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(t % half);
    const size_t rh = t / half;
    const int h = static_cast<int>(rh % heads);
    const size_t r = rh / heads;
    float* v = x + r * stride + size_t(h) * hd;
    const size_t p = static_cast<size_t>(pos[r]);
    const float c = cs[p * half + i], s = sn[p * half + i];
    if (interleaved) {
      const float a = v[2 * i], b = v[2 * i + 1];
      v[2 * i] = a * c - b * s;
      v[2 * i + 1] = a * s + b * c;
    } else {
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

__global__ void scale_rows_pos_kernel(float* x, size_t rows, size_t stride, size_t width,
                                      const int32_t* pos, const float* temp) {
  const size_t total = rows * width;
  for (size_t t = blockIdx.x * size_t(blockDim.x) + threadIdx.x; t < total;
       t += size_t(gridDim.x) * blockDim.x) {
    const size_t r = t / width, c = t % width;
    x[r * stride + c] *= temp[pos[r]];
  }
}

// ---------------------------------------------------------------- attention
// One warp per query row; lane l holds dimensions l, l + 32, ... (VPL of them). Keys are
// visited in order with an online softmax (running max, rescaled sum and accumulator).
template <int VPL>
__global__ void attention_kernel(const float* __restrict__ q, size_t qs,
                                 const float* __restrict__ k, const float* __restrict__ v,
                                 size_t kvs, const int64_t* offsets, int single_len, int nh,
                                 int nkv, int d, int dv, size_t vs, float scale, int window,
                                 int chunk, const float* sinks, float* out, size_t os) {
  const int seq = blockIdx.z, h = blockIdx.y;
  const int64_t o0 = offsets ? offsets[seq] : 0;
  const int len = offsets ? static_cast<int>(offsets[seq + 1] - o0) : single_len;
  const int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (i >= len) return;
  const int lane = threadIdx.x & 31;
  const int kvh = h / (nh / nkv);
  const float* qr = q + size_t(o0 + i) * qs + size_t(h) * d;
  float qv[VPL], acc[VPL];
#pragma unroll
  for (int c = 0; c < VPL; ++c) {
    const int idx = lane + 32 * c;
    qv[c] = idx < d ? qr[idx] : 0.0f;
    acc[c] = 0.0f;
  }
  int j0 = 0;
  if (window > 0) j0 = max(j0, i - window + 1);
  if (chunk > 0) j0 = max(j0, (i / chunk) * chunk);
  float m = -INFINITY, l = 0.0f;
  const float* kb = k + size_t(o0) * kvs + size_t(kvh) * d;
  const float* vb = v + size_t(o0) * vs + size_t(kvh) * dv;
  for (int j = j0; j <= i; ++j) {
    const float* kr = kb + size_t(j) * kvs;
    float dot = 0.0f;
#pragma unroll
    for (int c = 0; c < VPL; ++c) {
      const int idx = lane + 32 * c;
      if (idx < d) dot += qv[c] * kr[idx];
    }
    const float sc = warp_sum(dot) * scale;
    if (sc > m) {
      const float corr = expf(m - sc);
      l *= corr;
#pragma unroll
      for (int c = 0; c < VPL; ++c) acc[c] *= corr;
      m = sc;
    }
    const float p = expf(sc - m);
    l += p;
    const float* vr = vb + size_t(j) * vs;
#pragma unroll
    for (int c = 0; c < VPL; ++c) {
      const int idx = lane + 32 * c;
      if (idx < dv) acc[c] += p * vr[idx];
    }
  }
  if (sinks) {
    const float sk = sinks[h];
    const float mm = fmaxf(m, sk);
    const float corr = expf(m - mm);
    l = l * corr + expf(sk - mm);
#pragma unroll
    for (int c = 0; c < VPL; ++c) acc[c] *= corr;
  }
  const float inv = 1.0f / l;
  float* o = out + size_t(o0 + i) * os + size_t(h) * dv;
#pragma unroll
  for (int c = 0; c < VPL; ++c) {
    const int idx = lane + 32 * c;
    if (idx < dv) o[idx] = acc[c] * inv;
  }
}

// ---------------------------------------------------------------- attention probabilities
// One block per score row; the block's partial max / sum combined through shared memory.
template <bool kMax>
__device__ float block_reduce(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, w) : v + w;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  __syncthreads();  // `part` may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < warps ? part[lane] : (kMax ? -INFINITY : 0.0f);
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, w) : v + w;
  }
  return v;
}

__global__ void attention_softmax_kernel(float* s, int rows, int q0, int nk, int window,
                                         int chunk, const float* sinks, int head0) {
  const size_t r = blockIdx.x;
  const int i = q0 + static_cast<int>(r % rows), h = head0 + static_cast<int>(r / rows);
  float* row = s + r * size_t(nk);
  int j0 = 0;
  if (window > 0) j0 = max(j0, i - window + 1);
  if (chunk > 0) j0 = max(j0, (i / chunk) * chunk);
  float m = -INFINITY;
  for (int j = j0 + threadIdx.x; j <= i; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_reduce<true>(m);
  if (sinks) m = fmaxf(m, sinks[h]);
  float l = 0.0f;
  for (int j = j0 + threadIdx.x; j <= i; j += blockDim.x) l += expf(row[j] - m);
  l = block_reduce<false>(l);
  if (sinks) l += expf(sinks[h] - m);
  const float inv = 1.0f / l;
  for (int j = threadIdx.x; j < nk; j += blockDim.x)
    row[j] = (j >= j0 && j <= i) ? expf(row[j] - m) * inv : 0.0f;
}

// ---------------------------------------------------------------- statistics
constexpr int kStatRows = 64;  // rows per block of the column statistics
// ---------------------------------------------------------------- backend ops
__global__ void fill_kernel(float* x, size_t n, float v) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    x[i] = v;
}
__global__ void scale_kernel(float* x, size_t n, float f) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    x[i] *= f;
}
__global__ void sigmoid_kernel(float* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    x[i] = 1.0f / (1.0f + expf(-x[i]));
}
__global__ void mul_sigmoid_kernel(float* x, const float* g, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    x[i] *= 1.0f / (1.0f + expf(-g[i]));
}
// One warp per row.
__global__ void softmax_kernel(float* x, size_t rows, size_t n) {
  const size_t r = blockIdx.x * size_t(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  float* v = x + r * n;
  float mx = -INFINITY;
  for (size_t i = lane; i < n; i += 32) mx = fmaxf(mx, v[i]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float sum = 0.0f;
  for (size_t i = lane; i < n; i += 32) {
    const float e = expf(v[i] - mx);
    v[i] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  for (size_t i = lane; i < n; i += 32) v[i] /= sum;
}
__global__ void add_rows_scaled_kernel(float* dst, const float* src, size_t rows, size_t w,
                                       const float* f) {
  const size_t total = rows * w;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total;
       i += size_t(gridDim.x) * blockDim.x)
    dst[i] += (f ? f[i / w] : 1.0f) * src[i];
}
__global__ void gather_u32_kernel(const float* src, size_t w, const uint32_t* rows, size_t n,
                                  const float* sc, float* dst) {
  const size_t total = n * w;
  for (size_t t = blockIdx.x * size_t(blockDim.x) + threadIdx.x; t < total;
       t += size_t(gridDim.x) * blockDim.x) {
    const size_t i = t / w, c = t % w;
    const float v = src[size_t(rows[i]) * w + c];
    dst[t] = sc ? v * sc[i] : v;
  }
}
__global__ void scatter_add_kernel(float* dst, size_t w, const uint32_t* rows, size_t n,
                                   const float* src, const uint32_t* src_rows, const float* wt) {
  const size_t total = n * w;
  for (size_t t = blockIdx.x * size_t(blockDim.x) + threadIdx.x; t < total;
       t += size_t(gridDim.x) * blockDim.x) {
    const size_t i = t / w, c = t % w;
    const float f = wt ? wt[i] : 1.0f;
    const size_t sr = src_rows ? size_t(src_rows[i]) : i;
    dst[size_t(rows[i]) * w + c] += src[sr * w + c] * f;
  }
}
// Pass 1: block (x: 256 columns, y: 64 rows) writes its per-column partial sums and maxima.
__global__ void colstats_partial_kernel(const float* x, size_t rows, size_t k, double* psum,
                                        float* pmax, int* bad, unsigned long long* first_bad,
                                        unsigned long long call) {
  const size_t c = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (c >= k) return;
  const size_t r0 = size_t(blockIdx.y) * kStatRows, r1 = min(rows, r0 + kStatRows);
  double s = 0.0;
  float mx = 0.0f;
  bool nonfinite = false;
  for (size_t r = r0; r < r1; ++r) {
    const float v = x[r * k + c];
    if (!isfinite(v)) nonfinite = true;
    mx = fmaxf(mx, fabsf(v));
    s += double(v) * v;
  }
  psum[size_t(blockIdx.y) * k + c] = s;
  pmax[size_t(blockIdx.y) * k + c] = mx;
  if (nonfinite) {
    if (bad) atomicExch(bad, 1);
    if (first_bad) atomicMin(first_bad, call);
  }
}
// Pass 2: per column, the partials in block order; accumulate: the column's sum added to sumsq[c]
// (as a host accumulator adds it) and its max into colmax[c].
__global__ void colstats_final_kernel(const double* psum, const float* pmax, size_t blocks,
                                      size_t k, float* colmax, double* sumsq, bool accumulate) {
  const size_t c = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (c >= k) return;
  double s = 0.0;
  float mx = 0.0f;
  for (size_t b = 0; b < blocks; ++b) {
    s += psum[b * k + c];
    mx = fmaxf(mx, pmax[b * k + c]);
  }
  if (accumulate) {
    colmax[c] = fmaxf(colmax[c], mx);
    sumsq[c] += s;
  } else {
    colmax[c] = mx;
    sumsq[c] = s;
  }
}

// ---------------------------------------------------------------- NVFP4 activations
__device__ __forceinline__ float e4m3_round(float s) {  // RNE, saturating at 448
  const __nv_fp8_storage_t code = __nv_cvt_float_to_fp8(s, __NV_SATFINITE, __NV_E4M3);
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(code, __NV_E4M3)));
}

__device__ __forceinline__ float e2m1_round(float y) {  // RNE onto {0, .5, 1, 1.5, 2, 3, 4, 6}
  const float a = fabsf(y);
  float r;
  if (a <= 0.25f) r = 0.0f;
  else if (a < 0.75f) r = 0.5f;
  else if (a <= 1.25f) r = 1.0f;
  else if (a < 1.75f) r = 1.5f;
  else if (a <= 2.5f) r = 2.0f;
  else if (a < 3.5f) r = 3.0f;
  else if (a <= 5.0f) r = 4.0f;
  else r = 6.0f;
  return copysignf(r, y);
}

// One thread per 16-value block.
__global__ void fake_quant_kernel(float* x, size_t blocks, float gs) {
  const float inv_gs = 1.0f / gs, inv6 = 1.0f / 6.0f;
  for (size_t b = blockIdx.x * size_t(blockDim.x) + threadIdx.x; b < blocks;
       b += size_t(gridDim.x) * blockDim.x) {
    float* row = x + b * 16;
    float vmax = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; ++i) vmax = fmaxf(vmax, fabsf(row[i]));
    const float s = fminf(gs * (vmax * inv6), 448.0f);
    const float sf = e4m3_round(s);
    const float os = sf == 0.0f ? 0.0f : 1.0f / (sf * inv_gs);
    const float deq = sf / gs;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const float y = fminf(fmaxf(row[i] * os, -6.0f), 6.0f);
      row[i] = e2m1_round(y) * deq;
    }
  }
}

}  // namespace

void to_f32(const void* src, SrcType type, size_t n, float* dst, cudaStream_t s) {
  const unsigned g = blocks_for(n, 256);
  switch (type) {
    case SrcType::F32: to_f32_kernel<<<g, 256, 0, s>>>(static_cast<const float*>(src), n, dst); break;
    case SrcType::BF16:
      to_f32_kernel<<<g, 256, 0, s>>>(static_cast<const __nv_bfloat16*>(src), n, dst);
      break;
    case SrcType::F16: to_f32_kernel<<<g, 256, 0, s>>>(static_cast<const __half*>(src), n, dst); break;
  }
  check_launch("to_f32");
}

void add_bias(float* y, size_t rows, size_t n, const float* bias, cudaStream_t s) {
  add_bias_kernel<<<blocks_for(rows * n, 256), 256, 0, s>>>(y, rows, n, bias);
  check_launch("add_bias");
}

void rms_norm(const float* x, size_t rows, size_t dim, const float* w, float w_offset, float eps,
              float* out, cudaStream_t s) {
  if (rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(x, dim, w, w_offset, eps, out);
  check_launch("rms_norm");
}

void silu_mul(float* gate, const float* up, size_t n, cudaStream_t s) {
  silu_mul_kernel<<<blocks_for(n, 256), 256, 0, s>>>(gate, up, n);
  check_launch("silu_mul");
}

void silu_glu_split(const float* gate_up, size_t rows, size_t inter, float* out, cudaStream_t s) {
  silu_glu_split_kernel<<<blocks_for(rows * inter, 256), 256, 0, s>>>(gate_up, rows, inter, out);
  check_launch("silu_glu_split");
}

void clamped_swiglu_interleaved(const float* gate_up, size_t rows, size_t inter, float alpha,
                                float limit, float* out, cudaStream_t s) {
  swiglu_interleaved_kernel<<<blocks_for(rows * inter, 256), 256, 0, s>>>(gate_up, rows, inter,
                                                                           alpha, limit, out);
  check_launch("clamped_swiglu_interleaved");
}

void add_inplace(float* dst, const float* src, size_t n, cudaStream_t s) {
  add_kernel<<<blocks_for(n, 256), 256, 0, s>>>(dst, src, n);
  check_launch("add_inplace");
}

void rope(float* x, size_t rows, size_t stride, int heads, int head_dim, int half,
          const int32_t* pos, const float* cs, const float* sn, bool interleaved, cudaStream_t s) {
  if (2 * half > head_dim)
    throw Error("CUDA RoPE: rotary_dim " + std::to_string(2 * half) + " exceeds head_dim " +
                std::to_string(head_dim));
  const size_t total = rows * size_t(heads) * half;
  if (total == 0) return;
  rope_kernel<<<blocks_for(total, 256), 256, 0, s>>>(x, rows, stride, heads, head_dim, half, pos,
                                                     cs, sn, interleaved);
  check_launch("rope");
}

void scale_rows_by_position(float* x, size_t rows, size_t stride, size_t width,
                            const int32_t* pos, const float* temp, cudaStream_t s) {
  scale_rows_pos_kernel<<<blocks_for(rows * width, 256), 256, 0, s>>>(x, rows, stride, width, pos,
                                                                      temp);
  check_launch("scale_rows_by_position");
}

void causal_attention(const float* q, size_t q_stride, const float* k, const float* v,
                      size_t kv_stride, const int64_t* offsets, int nseq, int max_len, int nh,
                      int nkv, int head_dim, float scale, int window, int chunk,
                      const float* sinks, float* out, size_t out_stride, cudaStream_t s,
                      int v_dim, size_t v_stride) {
  if (nseq == 0 || max_len == 0) return;
  const int dv = v_dim > 0 ? v_dim : head_dim;
  const size_t vs = v_stride > 0 ? v_stride : kv_stride;
  if (head_dim > 256 || dv > 256 || nkv <= 0 || nh % nkv != 0)
    throw Error("CUDA attention: head_dim " + std::to_string(head_dim) + " with " +
                std::to_string(nh) + "/" + std::to_string(nkv) +
                " heads is not supported (head_dim <= 256, heads a multiple of kv heads)");
  constexpr int kWarps = 4;
  const dim3 grid(static_cast<unsigned>((max_len + kWarps - 1) / kWarps),
                  static_cast<unsigned>(nh), static_cast<unsigned>(nseq));
  const int vpl = (std::max(head_dim, dv) + 31) / 32;
#define FP4KIT_ATT(N)                                                                        \
  attention_kernel<N><<<grid, kWarps * 32, 0, s>>>(q, q_stride, k, v, kv_stride, offsets,     \
                                                    max_len, nh, nkv, head_dim, dv, vs,       \
                                                    scale, window, chunk, sinks, out,         \
                                                    out_stride)
  if (vpl <= 1) FP4KIT_ATT(1);
  else if (vpl <= 2) FP4KIT_ATT(2);
  else if (vpl <= 4) FP4KIT_ATT(4);
  else FP4KIT_ATT(8);
#undef FP4KIT_ATT
  check_launch("causal_attention");
}

void attention_softmax(float* s, int heads, int rows, int q0, int nk, int window, int chunk,
                       const float* sinks, int head0, cudaStream_t st) {
  if (heads == 0 || rows == 0) return;
  attention_softmax_kernel<<<static_cast<unsigned>(size_t(heads) * rows), 256, 0, st>>>(
      s, rows, q0, nk, window, chunk, sinks, head0);
  check_launch("attention_softmax");
}

void fill(float* x, size_t n, float value, cudaStream_t s) {
  if (n == 0) return;
  fill_kernel<<<blocks_for(n, 256), 256, 0, s>>>(x, n, value);
  check_launch("fill");
}

void scale(float* x, size_t n, float f, cudaStream_t s) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n, 256), 256, 0, s>>>(x, n, f);
  check_launch("scale");
}

void sigmoid(float* x, size_t n, cudaStream_t s) {
  if (n == 0) return;
  sigmoid_kernel<<<blocks_for(n, 256), 256, 0, s>>>(x, n);
  check_launch("sigmoid");
}

void mul_sigmoid(float* x, const float* gate, size_t n, cudaStream_t s) {
  if (n == 0) return;
  mul_sigmoid_kernel<<<blocks_for(n, 256), 256, 0, s>>>(x, gate, n);
  check_launch("mul_sigmoid");
}

void softmax_rows(float* x, size_t rows, size_t n, cudaStream_t s) {
  if (rows == 0) return;
  softmax_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, s>>>(x, rows, n);
  check_launch("softmax_rows");
}

void add_rows_scaled(float* dst, const float* src, size_t rows, size_t width, const float* f,
                     cudaStream_t s) {
  if (rows * width == 0) return;
  add_rows_scaled_kernel<<<blocks_for(rows * width, 256), 256, 0, s>>>(dst, src, rows, width, f);
  check_launch("add_rows_scaled");
}

void gather_rows_u32(const float* src, size_t width, const uint32_t* rows, size_t n,
                     const float* sc, float* dst, cudaStream_t s) {
  if (n * width == 0) return;
  gather_u32_kernel<<<blocks_for(n * width, 256), 256, 0, s>>>(src, width, rows, n, sc, dst);
  check_launch("gather_rows");
}

void scatter_add_rows(float* dst, size_t width, const uint32_t* rows, size_t n, const float* src,
                      const uint32_t* src_rows, const float* w, cudaStream_t s) {
  if (n * width == 0) return;
  scatter_add_kernel<<<blocks_for(n * width, 256), 256, 0, s>>>(dst, width, rows, n, src,
                                                                 src_rows, w);
  check_launch("scatter_add_rows");
}

size_t column_stats_scratch_bytes(size_t rows, size_t k) {
  const size_t blocks = (rows + kStatRows - 1) / kStatRows;
  return blocks * k * (sizeof(double) + sizeof(float));
}

void column_stats(const float* x, size_t rows, size_t k, void* scratch, float* colmax,
                  double* sumsq, int* bad, cudaStream_t s, unsigned long long* first_bad,
                  unsigned long long call, bool accumulate) {
  if (k == 0) return;
  const size_t blocks = (rows + kStatRows - 1) / kStatRows;
  double* psum = static_cast<double*>(scratch);
  float* pmax = reinterpret_cast<float*>(psum + blocks * k);
  if (blocks > 65535)
    throw Error("CUDA column statistics: " + std::to_string(rows) + " rows in one call (at most " +
                std::to_string(65535 * kStatRows) + ")");
  if (blocks > 0) {
    const dim3 grid(static_cast<unsigned>((k + 255) / 256), static_cast<unsigned>(blocks));
    colstats_partial_kernel<<<grid, 256, 0, s>>>(x, rows, k, psum, pmax, bad, first_bad,
                                                 call);
    check_launch("column_stats");
  }
  colstats_final_kernel<<<static_cast<unsigned>((k + 255) / 256), 256, 0, s>>>(psum, pmax, blocks,
                                                                              k, colmax, sumsq,
                                                                              accumulate);
  check_launch("column_stats");
}

void nvfp4_fake_quant(float* x, size_t rows, size_t k, float global_scale, cudaStream_t s) {
  if (k % 16 != 0)
    throw Error("activation quantization: K = " + std::to_string(k) + " is not a multiple of 16");
  if (!(global_scale > 0.0f) || !std::isfinite(global_scale))
    throw Error("activation quantization: input global scale " + std::to_string(global_scale) +
                " is not a positive finite number");
  const size_t blocks = rows * k / 16;
  if (blocks == 0) return;
  fake_quant_kernel<<<blocks_for(blocks, 256), 256, 0, s>>>(x, blocks, global_scale);
  check_launch("nvfp4_fake_quant");
}

}  // namespace fp4kit::engine::cuda
