#pragma once
// The checkpoint's tensors grouped by module, as a loader groups parameters: "<m>.weight",
// "<m>.weight_scale", ... all belong to module <m>.
#include <string>
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/tensor_role.hpp"
#include "fp4kit/verify/module_names.hpp"
#include "fp4kit/verify/quant_config.hpp"

namespace fp4kit::verify {

struct ModuleTensors {
  std::string name;
  Role role = Role::Other;
  // The weight: format A "<m>.weight" (U8 when quantized), format B "<m>.weight_packed" when
  // quantized, else "<m>.weight"; "<m>" itself for suffix-less tensors (fused 3-D experts).
  const TensorInfo* weight = nullptr;
  bool quantized = false;              // packed NVFP4 weight present
  const TensorInfo* weight_scale = nullptr;
  const TensorInfo* global_scale = nullptr;  // A: weight_scale_2; B: weight_global_scale
  const TensorInfo* input_scale = nullptr;   // A: input_scale;    B: input_global_scale
  const TensorInfo* unpacked_weight = nullptr;  // B: a plain "<m>.weight" next to weight_packed
  std::vector<const TensorInfo*> foreign;  // scale/packed tensors named in the other format
  std::vector<const TensorInfo*> others;   // bias, k_scale, ... (not checked)
  int exclude_pattern = -1;                // index into the exclusion list, -1 when not excluded
  // An MXFP4 source tensor ("<m>_blocks" / "<m>_scales" of gpt-oss, spec section 8) still in the
  // checkpoint: U8 but not NVFP4, so never `quantized`.
  bool mxfp4 = false;

  bool has_scales() const { return weight_scale || global_scale || input_scale; }
  // [N, K] of the (unpacked) weight matrix; K = 2 * packed columns. 0 when unknown.
  uint64_t rows() const;
  uint64_t cols() const;
  // Number of weight elements (N*K; E*N*K for 3-D).
  uint64_t params() const;
};

// Groups every tensor of `ckpt` by module and classifies it.
std::vector<ModuleTensors> build_inventory(const Checkpoint& ckpt, const DeclaredQuant& declared,
                                           const NameContext& ctx);

}  // namespace fp4kit::verify
