#pragma once
// Routing on the GPU: router logits to (expert, weight) pairs with the CPU engine's choices and
// weights bit for bit (route_topk in cpu/ops.cpp: the same float32 formulas in the same order,
// route_exp.hpp's exp, ties to the lower expert index), and the pairs grouped by expert in token
// order (Backend::route_grouped) without leaving the device.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "fp4kit/engine/backend.hpp"

namespace fp4kit::engine::cuda {

// expert[t * k + j], weight[t * k + j] for every token t < T (device arrays); logits [T, E] and
// opt.selection_bias in device memory. E <= 1024, k <= E.
void route_topk(const float* logits, size_t T, size_t E, const RouterOptions& opt,
                int32_t* expert, float* weight, cudaStream_t s);

// Scratch bytes group_by_expert needs for T tokens, E experts.
size_t group_scratch_bytes(size_t T, size_t E);
// The pairs of route_topk grouped by expert, stable in token order: rows[i] (token) and
// wout[i] (weight) for i in [offset[e], offset[e + 1]) belong to expert e; offset [E + 1]
// (device) is written too. Arrays [T * k] (device).
void group_by_expert(const int32_t* expert, const float* weight, size_t T, size_t k, size_t E,
                     void* scratch, uint32_t* rows, float* wout, unsigned long long* offset,
                     cudaStream_t s);

}  // namespace fp4kit::engine::cuda
