#pragma once
// Decoding one linear (or norm, or embedding rows) from a checkpoint into float32, whatever its
// storage: BF16/F16/F32, NVFP4 format A (ModelOpt: weight U8 + weight_scale F8_E4M3 +
// weight_scale_2) or format B (compressed-tensors: weight_packed + weight_scale +
// weight_global_scale = 1/s2), dequantized exactly as the loaders do; quantized sources too: FP8
// with 128x128 block scales (weight_scale_inv) and compressed-tensors pack-quantized INT4/INT8
// (weight_packed I32 + weight_scale + weight_shape, model/packed_int.hpp). A device backend
// decodes the kinds it knows and hands the others to decode_linear on the host.
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/engine/model_spec.hpp"
#include "fp4kit/model/packed_int.hpp"
#include "fp4kit/numeric/source_formats.hpp"

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

// How a linear is stored: what load_linear_into decodes, after every check it makes (shapes,
// dtypes, per-tensor scales, the FP8 scale grid). A device backend moves these tensors' bytes and
// decodes them to the same floats; decode_linear is the host's decoding.
struct StoredLinear {
  enum class Kind {
    Float,     // `tensor` of dtype `dtype` (any float dtype), n * k values from byte `offset`
    Nvfp4,     // `tensor` U8 [n, k/2] codes, `scales` E4M3 [n, k/16]: e2m1 * scale * s2 (ModelOpt)
    Nvfp4Div,  // the same layout, compressed-tensors: e2m1 * (scale / s2), s2 = weight_global_scale
    Fp8Block,  // `tensor` F8_E4M3 [n, k], `scales` the checked scale_inv grid `grid` (128 x 128)
    PackedInt,  // `tensor` I32 weight_packed, `scales` weight_scale: compressed-tensors
                // pack-quantized INT4/INT8 as `packed_int` resolved it (model/packed_int.hpp)
  };
  Kind kind = Kind::Float;
  std::string tensor, scales;
  DType dtype = DType::F32;  // Float
  size_t offset = 0;         // Float: bytes into `tensor` (a row range of fused experts)
  float s2 = 0.0f;           // Nvfp4, Nvfp4Div
  Fp8BlockScales grid;       // Fp8Block (data points into the checkpoint)
  PackedIntWeight packed_int;  // PackedInt
  float act_global_scale = 0.0f;
  bool nvfp4 = false;
  bool bias = false;         // <module>.bias belongs to the linear
  std::string release;       // the tensor to release once decoded (empty: none)
};
StoredLinear describe_linear(const Checkpoint& ckpt, const LinearRef& ref, bool activations);
// w [n, k] from the stored bytes (the host's decoding of load_linear).
void decode_linear(const Checkpoint& ckpt, const StoredLinear& s, size_t n, size_t k, float* w);

// Expert `expert` of a BMM expert tensor as stored (load_bmm_expert's checks made): the bytes of
// that expert start at `offset` of `tensor` (and `scales_offset` of `scales`). Mxfp4: `tensor` =
// <module>_blocks, `scales` = <module>_scales, n * k / 32 blocks; Float: `tensor` [K, N] of
// `dtype`; Nvfp4: `tensor` U8 [K/2, N] codes, `scales` E4M3 [K/16, N], times s2.
struct StoredBmmExpert {
  BmmRef::Storage storage = BmmRef::Storage::Float;
  std::string tensor, scales;
  DType dtype = DType::F32;
  size_t offset = 0, scales_offset = 0;
  float s2 = 0.0f;
  float act_global_scale = 0.0f;
  bool nvfp4 = false;
};
StoredBmmExpert describe_bmm_expert(const Checkpoint& ckpt, const BmmRef& ref, size_t expert,
                                    bool activations);
// w [n, k] (the linear's layout) from the stored bytes, on the host.
void decode_bmm_expert(const Checkpoint& ckpt, const StoredBmmExpert& s, size_t n, size_t k,
                       float* w);
// `<module>_bias`[expert] (n floats), or empty when the tensor has none.
std::vector<float> load_bmm_expert_bias(const Checkpoint& ckpt, const BmmRef& ref, size_t expert);

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
