#pragma once
// CUDA kernels of the Gated DeltaNet ops of the GPU backend (Backend::causal_conv1d_silu,
// gdn_gates, gated_delta_rule: semantics in engine/backend.hpp), float32 throughout. They follow
// the CPU backend (cpu/gated_delta.cpp) operation by operation: every output element is the same
// sequence of float32 operations in the same order; only fused multiply-adds, the device's expf /
// log1pf (within 2 ulp) and the order of the double sum of the L2 norms differ, so results agree
// with the CPU backend to float32 rounding (tests/cuda/cuda_gdn_test.cpp states the tolerance).
// Pointers are device memory; launchers check the launch and throw fp4kit::Error.
#include <cstddef>

#include <cuda_runtime_api.h>

namespace fp4kit::engine::cuda {

// out[t, c] = silu(sum_j weight[c, j] * x[t - (K - 1) + j, c]) (zero left padding); x has row
// stride `stride`, out [len, channels].
void causal_conv1d_silu(const float* x, size_t len, size_t channels, size_t stride,
                        const float* weight, size_t K, float* out, cudaStream_t s);

// a <- -exp(A_log[h]) * softplus(a + dt_bias[h]) (identity above 20), b <- sigmoid(b); [rows, heads].
void gdn_gates(float* a, float* b, size_t rows, size_t heads, const float* A_log,
               const float* dt_bias, cudaStream_t s);

// Floats of device scratch gated_delta_rule needs for these sizes.
size_t gated_delta_scratch_floats(size_t len, int nk, int nv, int dk, int dv, bool chunked);

// The gated delta rule of one sequence (Backend::gated_delta_rule), chunk-64 form (transformers'
// torch_chunk_gated_delta_rule) or token by token. `scratch`: gated_delta_scratch_floats floats.
// Throws when dk / dv need more shared memory than the device has (dk, dv <= 256 fit an H100/H200).
void gated_delta_rule(const float* q, const float* k, size_t qk_stride, const float* v,
                      size_t v_stride, const float* g, const float* beta, size_t len, int nk,
                      int nv, int dk, int dv, bool chunked, float* out, float* scratch,
                      cudaStream_t s);

}  // namespace fp4kit::engine::cuda
