#pragma once
// The float32 building blocks of the CPU forward pass. Matrix products go through OpenBLAS
// (sgemm on all cores); the rest is plain loops spread over the TBB pool with parallel_for.
#include <cstddef>
#include <string>

#include "fp4kit/engine/backend.hpp"

namespace fp4kit::engine {

// Keeps OpenBLAS single-threaded (the engine runs fixed tiles on the TBB pool instead); the
// argument is ignored and kept for callers that state their thread count.
void set_blas_threads(int n);

// OpenBLAS picks its kernels from CPUID when it loads. Under some sandboxes (gVisor on the lent
// H200 machine) it does not recognise the CPU and falls back to its generic SSE3 "Prescott"
// kernels: single-threaded sgemm 28.7 GFLOP/s there against torch's 116. Returns the
// OPENBLAS_CORETYPE (OpenBLAS's documented override, read only when it loads) that names the
// kernels this CPU and OS run (SkylakeX with AVX-512, Haswell with AVX2 + FMA) when OpenBLAS
// fell back to a pre-AVX core and the variable is unset; empty otherwise.
std::string blas_coretype_override();
// The OpenBLAS kernels in use ("SkylakeX", "Haswell", "Prescott", ...).
std::string blas_core_name();

// y[rows, n] = x[rows, k] * w[n, k]^T (+ bias[n]). Row-major, w as stored in checkpoints.
// Output tiles of 256 columns by 64-512 rows (chosen from the shape, ops.cpp), each one
// single-threaded sgemm, spread over all threads: the bytes do not depend on the thread count.
// Inside a task of parallel_tasks (experts side by side): one single-threaded sgemm of the whole
// product instead.
void matmul_nt(const float* x, size_t rows, size_t k, const float* w, size_t n, float* y,
               const float* bias = nullptr);

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * g, per row of `dim` values (in place allowed);
// g = weight, 1 + weight (`one_plus`), or 1 when weight is null.
void rms_norm(const float* x, size_t rows, size_t dim, const float* weight, float eps, float* out,
              bool one_plus = false);

// Softmax of each row of x [rows, n] in place (max subtracted, float32 as torch).
void softmax_rows(float* x, size_t rows, size_t n);

// Top-k routing of logits [tokens, experts] on the host (backend.hpp: RouterKind).
Routes route_topk(const float* logits, size_t tokens, size_t experts, const RouterOptions& opt);

// Per column of x [rows, k]: colmax = max |x|, sumsq += x^2 in double in row order (each task owns
// a range of columns: same bytes for any thread count). Returns false on a NaN or Inf.
bool column_amax_sumsq(const float* x, size_t rows, size_t k, float* colmax, double* sumsq);

// gate[i] = silu(gate[i]) * up[i] (SwiGLU), silu(g) = g / (1 + exp(-g)).
void silu_mul(float* gate, const float* up, size_t n);

// dst[i] += src[i]
void add_inplace(float* dst, const float* src, size_t n);

// Causal grouped-query attention over ONE sequence of L tokens (blocks of 64 queries per head:
// scores and the weighted sum of values are single-threaded sgemms).
// q [L, nh*d] (row stride q_stride), k/v [L, nkv*d] (row stride kv_stride), out [L, nh*d].
// Query head h reads key/value head h / (nh / nkv). window > 0 limits keys to i - j < window.
// sinks (gpt-oss, may be null): one logit per query head that joins the softmax denominator
// (exp(sink - max) added to the sum, max taken over the scores and the sink) and reads no value.
// chunk > 0 (Llama-4 chunked attention): keys only from the query's block of `chunk` positions,
// i.e. j <= i and j / chunk == i / chunk.
// dv > 0 (MLA): value and output heads hold dv values (v rows of stride v_stride, 0 = kv_stride;
// output head h at h * dv) while q/k heads hold d.
void causal_attention(const float* q, size_t q_stride, const float* k, const float* v,
                      size_t kv_stride, size_t L, int nh, int nkv, int d, float scale, int window,
                      float* out, size_t out_stride, const float* sinks = nullptr, int chunk = 0,
                      int dv = 0, size_t v_stride = 0);

// Llama-4's attention temperature of the query at `position` on NoPE layers, in float32 as
// transformers computes it: log1p(floor((position + 1) / floor_scale)) * attn_scale + 1.
float llama4_attn_temperature(size_t position, float floor_scale, float attn_scale);

// Llama-4 BMM experts' activation on split gate/up: for each row of gate_up [rows, 2 * inter],
// out[i] = silu(gu[i]) * gu[inter + i]  (gate = the first half, up = the second; out [rows, inter]).
void silu_glu_split(const float* gate_up, size_t rows, size_t inter, float* out);

// gpt-oss experts' activation on interleaved gate/up: for each row of gate_up [rows, 2 * inter],
// gate = min(gu[2i], limit), up = clamp(gu[2i + 1], -limit, limit),
// out[i] = (up + 1) * gate * sigmoid(alpha * gate)  (out [rows, inter]).
void clamped_swiglu_interleaved(const float* gate_up, size_t rows, size_t inter, float alpha,
                                float limit, float* out);

// Gated DeltaNet kernels (backend.hpp states the semantics).
void causal_conv1d_silu(const float* x, size_t len, size_t channels, size_t stride,
                        const float* weight, size_t K, float* out);
void gdn_gates(float* a, float* b, size_t rows, size_t heads, const float* A_log,
               const float* dt_bias);
void gated_delta_rule(const float* q, const float* k, size_t qk_stride, const float* v,
                      size_t v_stride, const float* g, const float* beta, size_t len, int nk,
                      int nv, int dk, int dv, bool chunked, float* out);

}  // namespace fp4kit::engine
