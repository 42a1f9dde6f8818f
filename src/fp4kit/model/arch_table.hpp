#pragma once
// Architecture tables as data: for each model family, the in-layer tensor names (the part after
// "<prefix>layers.<L>.") and the role each one plays. Patterns are dot-separated segments; the
// segment "{E}" matches a decimal expert index. Everything outside the layers (embeddings,
// lm_head, final norm, vision tower, MTP) is recognised the same way for every family
// (see classify.hpp).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fp4kit/model/tensor_role.hpp"

namespace fp4kit {

// Qwen3-Next / Qwen3.5 linear-attention parts that matter to the plan.
enum class LinearAttnPart : uint8_t {
  None,     // not linear attention, or a part that is always kept (conv1d, A_log, in_proj_a/b, ...)
  InProj,   // in_proj_qkv / in_proj_z / in_proj_qkvz: quantizable on request, one fusion group
  OutProj,  // out_proj: quantizable on request, alone
};

struct LayerPattern {
  std::string_view pattern;  // e.g. "mlp.experts.{E}.gate_proj.weight"
  Role role;
  LinearAttnPart linear_attn = LinearAttnPart::None;
};

struct ArchFamily {
  std::string_view name;                          // "qwen3_moe", ..., "generic"
  std::vector<std::string_view> model_types;      // config model_type values it serves
  std::vector<std::string_view> architectures;    // config architectures it serves (fallback)
  std::vector<std::span<const LayerPattern>> tables;  // tried in order, first match wins
  bool moe = false;                               // has routed experts
  bool fused_experts = false;                     // fused 3-D [E,2I,H]/[E,H,I] experts accepted
  // What a decoder layer must hold (checked by the plan; a hole is an error naming the part):
  // always, a part that is present is complete (q/k/v/o of attention; kv_a/kv_b/o and q or
  // q_a+q_b of MLA; gate/up/down of a dense MLP or a shared expert; a router for routed
  // experts); with complete_layers, also every layer 0..num_hidden_layers-1 holds a token mixer
  // (attention or linear attention) and an MLP (dense or experts). The generic fallback only
  // knows names, not what its layers must hold.
  bool complete_layers = true;
};

// The in-layer name pattern of a role in a family's tables ("self_attn.q_proj.weight"), or ""
// when no table of the family has it.
std::string_view pattern_of(const ArchFamily& family, Role role);

// All known families (generic last).
const std::vector<ArchFamily>& arch_families();
// The generic fallback: the union of all tables, plus recognising Linear weights by name.
const ArchFamily& generic_family();
// The family for a model_type (a "_text" suffix of multimodal wrappers is ignored), else for one
// of the architectures; nullptr when unknown.
const ArchFamily* find_family(std::string_view model_type,
                              const std::vector<std::string>& architectures);

}  // namespace fp4kit
