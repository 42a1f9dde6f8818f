#pragma once
// compressed-tensors "pack-quantized" integer weights as a source format (Kimi-K2 Thinking and
// Kimi-K2.5 routed experts: INT4, symmetric, a BF16 scale per 32 columns; llm-compressor's W4A16 /
// W8A16 checkpoints). A Linear "<m>" is stored as
//   <m>.weight_packed  I32 [n, ceil(k * bits / 32)]   the integers, packed (numeric/source_formats)
//   <m>.weight_scale   BF16/F16/F32 [n, ceil(k / group)] (channel strategy: [n, 1])
//   <m>.weight_shape   I32/I64 [2] = {n, k}
// and config.json's quantization_config (at the top level, or in text_config as Kimi-K2.5 has it)
// says quant_method "compressed-tensors", format "pack-quantized" and, per config group, the
// weights' num_bits, type, symmetric, strategy and group_size.
//
// What is read: type "int", symmetric, strategy "group" or "channel", num_bits 4 or 8. What is
// refused, naming the config key or tensor: asymmetric schemes (weight_zero_point), activation
// ordering with a g_idx ("actorder": "group", weight_g_idx), other strategies (tensor, block,
// tensor_group), other bit widths, a float type. Every pack-quantized weight must match one of
// the config's schemes by its shapes.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/model/tensor_meta.hpp"

namespace fp4kit {

class Checkpoint;

struct PackedIntScheme {
  int bits = 4;
  uint64_t group_size = 0;  // 0: channel strategy (one scale per row)
  std::string name;         // the config group ("group_0"), for messages
};

// The pack-quantized weight schemes of config.json (empty when the checkpoint is not a
// compressed-tensors pack-quantized one). Throws fp4kit::Error for a scheme fp4kit cannot read
// (see above), naming `label` and the config key.
std::vector<PackedIntScheme> packed_int_schemes(const nlohmann::json& config,
                                                const std::string& label);

// One pack-quantized Linear, resolved against the config's schemes.
struct PackedIntWeight {
  std::string module;                       // "<m>"
  std::string packed, scale, shape_tensor;  // "<m>.weight_packed", "<m>.weight_scale", "<m>.weight_shape"
  uint64_t rows = 0, cols = 0;              // the [n, k] matrix
  int bits = 4;
  uint64_t group = 0;  // columns per scale (k for the channel strategy)
  bool channel = false;       // the channel strategy (one scale per row)
  uint64_t stored_bytes = 0;  // bytes of weight_packed + weight_scale
  TensorMeta scale_meta, shape_meta;  // the weight_scale and weight_shape tensors
};

// The tensors a resolver sees: metadata by name (null when absent) and the integer values of a
// small I32/I64 tensor (weight_shape).
struct PackedIntLookup {
  std::function<const TensorMeta*(const std::string&)> meta;
  std::function<std::vector<int64_t>(const std::string&)> values;
};

// Resolves module `m` (whose "<m>.weight_packed" is I32). Throws fp4kit::Error naming the tensor
// and the rule: missing weight_scale / weight_shape, a zero point or g_idx present, shapes that
// match no scheme of `schemes` (or no schemes at all: an I32 weight_packed without a
// pack-quantized quantization_config).
PackedIntWeight resolve_packed_int(const std::string& m, const std::vector<PackedIntScheme>& schemes,
                                   const PackedIntLookup& lookup, const std::string& label);

// The values of a small I32/I64 tensor of `ckpt` (weight_shape); throws for another dtype.
std::vector<int64_t> small_int_values(const Checkpoint& ckpt, const std::string& name);

// "<m>.weight_packed" is an I32 tensor of `ckpt` (and not NVFP4's U8 weight_packed).
bool is_packed_int(const Checkpoint& ckpt, const std::string& m);
// The same from the checkpoint (schemes from its config.json).
PackedIntWeight packed_int_weight(const Checkpoint& ckpt, const std::string& m);

// Decodes rows [row_begin, row_begin + rows) of `w` to float32 (exact: see source_formats.hpp).
void decode_packed_int(const Checkpoint& ckpt, const PackedIntWeight& w, uint64_t row_begin,
                       uint64_t rows, float* out);

}  // namespace fp4kit
