#pragma once
// Decides what one checkpoint tensor is (role, layer, expert, MoE block) from its name and shape,
// using a family's table (arch_table.hpp) for the tensors inside the decoder layers and
// family-independent rules for the rest (embeddings, lm_head, norms, vision tower, MTP).
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/model/arch_table.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/model/tensor_meta.hpp"
#include "fp4kit/model/tensor_role.hpp"

namespace fp4kit {

struct TensorClass {
  Role role = Role::Other;
  int64_t layer = -1;          // decoder layer index, -1 outside the layers
  int64_t expert = -1;         // routed expert index for per-expert tensors, else -1
  std::string module;          // tensor name without ".weight" (fused 3-D / bare params: the name)
  std::string layer_prefix;    // "<prefix>layers.<L>." ("" outside the layers)
  std::string moe_block;       // "<prefix>layers.<L>.mlp" (or .block_sparse_moe) for MoE tensors
  std::string rule;            // what recognised it, for plan reasons
  std::string subtree;         // Vision / Mtp: the name up to the segment that marks it ("model.visual")
  LinearAttnPart linear_attn = LinearAttnPart::None;
  bool in_table = false;       // matched the family's table (not only a name heuristic)
  bool linear_weight = false;  // a Linear weight [N, K] (or fused 3-D experts): quantizable in principle
};

class TensorClassifier {
 public:
  TensorClassifier(const ArchFamily& family, const ModelConfig& config)
      : family_(family), config_(config) {}
  TensorClass classify(const TensorMeta& t) const;
  const ArchFamily& family() const { return family_; }

 private:
  const ArchFamily& family_;
  const ModelConfig& config_;
};

// Module names a generic Linear weight may have ("*_proj", fc1, w1, dense, ...): the generic
// fallback quantizes 2-D ".weight" tensors with such names. GPT-2 style Conv1D names
// (c_attn, c_fc, c_proj) store [K, N] and are deliberately NOT recognised.
bool looks_like_linear_name(const std::string& module_last_segment);

}  // namespace fp4kit
