#pragma once
// Decoding one linear (or norm, or embedding rows) from a checkpoint into float32, whatever its
// storage: BF16/F16/F32, NVFP4 format A (ModelOpt: weight U8 + weight_scale F8_E4M3 +
// weight_scale_2) or format B (compressed-tensors: weight_packed + weight_scale +
// weight_global_scale = 1/s2), dequantized exactly as the loaders do.
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/engine/model_spec.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

struct LinearWeights {
  std::string module;
  size_t n = 0, k = 0;
  std::vector<float> w;     // [n, k] row-major
  std::vector<float> bias;  // empty or [n]
  // > 0: a W4A4 checkpoint; inputs are quantized with this global scale (1 / input_scale) before
  // the product, as Blackwell kernels do (see act_quant.hpp).
  float act_global_scale = 0.0f;
  bool nvfp4 = false;  // the weight was stored as NVFP4
};

// `activations`: honour input_scale / input_global_scale (W4A4 simulation). When false, a W4A4
// checkpoint runs as weight-only.
LinearWeights load_linear(const Checkpoint& ckpt, const LinearRef& ref, bool activations);
// The same, decoded into `w` (ref.rows * ref.cols floats, every one written); the returned
// LinearWeights has an empty `w` (a backend decoding into its own memory).
LinearWeights load_linear_into(const Checkpoint& ckpt, const LinearRef& ref, bool activations,
                               float* w);

// Expert `expert` of a gpt-oss BMM expert tensor as a linear [N, K] (the transpose of the stored
// [K, N]; MXFP4 blocks already hold [N, K]) with its bias row `<module>_bias`[expert]. Gate/up stay
// interleaved in N as stored. NVFP4 3-D output honours `<module>_input_scale` when `activations`.
LinearWeights load_bmm_expert(const Checkpoint& ckpt, const BmmRef& ref, size_t expert,
                              bool activations);

// The rows `rows` of w (in that order) as a linear of the same module (bias rows follow). Used to
// split fused projections (Qwen's q/gate, Qwen3-Next's grouped qkvz / ba).
LinearWeights take_rows(const LinearWeights& w, const std::vector<size_t>& rows);

// A 1-D float tensor (norm weights, biases) of exactly `expected` elements.
std::vector<float> load_vector(const Checkpoint& ckpt, const std::string& tensor, size_t expected);

// out[i, :] = row ids[i] of the 2-D float tensor `tensor` [vocab, hidden]. Throws for an id out of
// range (naming it).
void gather_rows(const Checkpoint& ckpt, const std::string& tensor, const int32_t* ids,
                 size_t count, size_t hidden, float* out);

}  // namespace fp4kit::engine
