#pragma once
// CUDA kernels of the engine's GPU backend, as host launchers on a stream. Every pointer is
// device memory unless a comment says otherwise; float32 throughout (the matrix products go
// through cuBLAS, see device.hpp). Each launcher checks the launch and throws fp4kit::Error.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace fp4kit::engine::cuda {

enum class SrcType : int { F32 = 0, BF16 = 1, F16 = 2 };

// dst[i] = float(src[i]) for a BF16/F16/F32 source.
void to_f32(const void* src, SrcType type, size_t n, float* dst, cudaStream_t s);

// y[r, :] += bias for every row r < rows.
void add_bias(float* y, size_t rows, size_t n, const float* bias, cudaStream_t s);

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * (w_offset + w), sum of squares in double as the CPU
// engine does (w_offset = 1 for the "1 + weight" norms; w null: weight 1). In place allowed.
void rms_norm(const float* x, size_t rows, size_t dim, const float* w, float w_offset, float eps,
              float* out, cudaStream_t s);

// gate[i] = silu(gate[i]) * up[i].
void silu_mul(float* gate, const float* up, size_t n, cudaStream_t s);
// out[r, i] = silu(gu[r, i]) * gu[r, inter + i]  (Llama-4 split gate/up).
void silu_glu_split(const float* gate_up, size_t rows, size_t inter, float* out, cudaStream_t s);
// gpt-oss clamped SwiGLU on interleaved gate/up pairs (see cpu/ops.hpp).
void clamped_swiglu_interleaved(const float* gate_up, size_t rows, size_t inter, float alpha,
                                float limit, float* out, cudaStream_t s);
// dst[i] += src[i].
void add_inplace(float* dst, const float* src, size_t n, cudaStream_t s);

// RoPE in place on `heads` heads of `head_dim` per row (row stride `stride` floats); row r is at
// position pos[r]; cs/sn [positions, half] hold cos/sin (times the attention scaling), half =
// rotary_dim / 2 (partial rotary: the dims past rotary_dim stay). rotate_half pairs (i, i + half),
// or (2i, 2i + 1) when interleaved, for i < half.
void rope(float* x, size_t rows, size_t stride, int heads, int head_dim, int half,
          const int32_t* pos, const float* cs, const float* sn, bool interleaved, cudaStream_t s);
// x[r, 0:width] *= temp[pos[r]] (Llama-4 NoPE attention temperature).
void scale_rows_by_position(float* x, size_t rows, size_t stride, size_t width,
                            const int32_t* pos, const float* temp, cudaStream_t s);

// Causal GQA attention over nseq sequences packed back to back: sequence i is rows
// [offsets[i], offsets[i + 1]) (device int64 array) of q [rows, *] / k, v [rows, *]; with
// offsets null, one sequence of max_len rows. Semantics of cpu/ops.hpp causal_attention (window,
// chunk, sinks; v_dim > 0: value/output heads of v_dim with value rows of stride v_stride).
// head_dim, v_dim <= 256.
void causal_attention(const float* q, size_t q_stride, const float* k, const float* v,
                      size_t kv_stride, const int64_t* offsets, int nseq, int max_len, int nh,
                      int nkv, int head_dim, float scale, int window, int chunk,
                      const float* sinks, float* out, size_t out_stride, cudaStream_t s,
                      int v_dim = 0, size_t v_stride = 0);


// Attention probabilities in place from scaled scores s [heads, rows, nk] (row r of head h:
// query q0 + r against keys 0..nk-1, q0 + rows <= nk, head h = head0 + the index within s): the
// keys causal_attention lets the query see (j <= i, window, chunk) get exp(s - max) / sum, with
// sinks[h] in the max and the sum when sinks is not null; every other key 0.
void attention_softmax(float* s, int heads, int rows, int q0, int nk, int window, int chunk,
                       const float* sinks, int head0, cudaStream_t st);

// ---- the rest of the Backend op interface (cuda_backend.cpp)
void fill(float* x, size_t n, float value, cudaStream_t s);
void scale(float* x, size_t n, float f, cudaStream_t s);
void sigmoid(float* x, size_t n, cudaStream_t s);
void mul_sigmoid(float* x, const float* gate, size_t n, cudaStream_t s);  // x *= sigmoid(gate)
// Per row of n values, in place: exp(x - max) / sum, as cpu/ops.hpp softmax_rows.
void softmax_rows(float* x, size_t rows, size_t n, cudaStream_t s);
// dst[r, :] += f[r] * src[r, :] (f null: 1).
void add_rows_scaled(float* dst, const float* src, size_t rows, size_t width, const float* f,
                     cudaStream_t s);
// dst[i, :] = src[rows[i], :] * (scale ? scale[i] : 1)  (rows, scale in device memory).
void gather_rows_u32(const float* src, size_t width, const uint32_t* rows, size_t n,
                     const float* scale, float* dst, cudaStream_t s);
// dst[rows[i], :] += src[src_rows ? src_rows[i] : i, :] * (w ? w[i] : 1); rows distinct.
void scatter_add_rows(float* dst, size_t width, const uint32_t* rows, size_t n, const float* src,
                      const uint32_t* src_rows, const float* w, cudaStream_t s);
// Per column of x [rows, k]: colmax[c] = max |x[:, c]|, sumsq[c] = sum x^2 in double, summed in a
// fixed order (blocks of 64 rows, then the blocks in order: the same bytes on every run);
// partial: scratch of ceil(rows / 64) * k doubles and as many floats after it. On NaN/Inf:
// *bad = 1 (bad given) and *first_bad = min(*first_bad, call) (first_bad given). accumulate:
// colmax[c] = max(colmax[c], max |x[:, c]|) and sumsq[c] += the column's sum instead.
size_t column_stats_scratch_bytes(size_t rows, size_t k);
void column_stats(const float* x, size_t rows, size_t k, void* scratch, float* colmax,
                  double* sumsq, int* bad, cudaStream_t s, unsigned long long* first_bad = nullptr,
                  unsigned long long call = 0, bool accumulate = false);

// NVFP4 fake quantization of activations in place (cpu act_quant.hpp semantics).
void nvfp4_fake_quant(float* x, size_t rows, size_t k, float global_scale, cudaStream_t s);

}  // namespace fp4kit::engine::cuda
