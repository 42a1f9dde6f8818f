#pragma once
// How a serving engine sees a checkpoint module, decided from its name alone (a loader's view:
// vLLM and SGLang pick the layer class, the fused GEMM and the tensor-parallel split from names).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fp4kit/model/tensor_role.hpp"

namespace fp4kit::verify {

// Context that names alone cannot give (from config.json; zero when unknown).
struct NameContext {
  int64_t num_hidden_layers = 0;  // layers at or beyond this index are MTP layers (DeepSeek, GLM)
};

// A routed expert: "<moe>.experts.<index>.<proj>" (Qwen/DeepSeek gate_proj/up_proj/down_proj,
// Mixtral w1/w3/w2).
struct ExpertName {
  std::string moe;   // prefix up to and including "experts", e.g. "model.layers.0.mlp.experts"
  int64_t index = -1;
  std::string proj;  // "gate_proj", "w1", ...
};
std::optional<ExpertName> parse_expert(std::string_view module);

// Decoder layer index ("model.layers.<L>." or "layers.<L>."), -1 when none.
int64_t layer_index(std::string_view module);

// The role of module `module` (a tensor name without its ".weight"/".weight_scale"... suffix).
// `dims` is the rank of its weight (2 for linears; 3 for fused experts; 0 when unknown).
Role classify_module(std::string_view module, int dims, const NameContext& ctx);

// True for roles that loaders build as quantizable linear layers and that fp4kit quantizes by
// default (spec section 7): attention, MLA, MLP, routed and shared experts.
bool is_default_quantized_role(Role r);
// True for roles that must never be NVFP4 (routers, gates, norms, embeddings, vision parts).
bool is_never_quantized_role(Role r);

// How tensor parallelism splits a linear: Column splits N (the output rows), Row splits K.
enum class TpSplit { None, Column, Row };
TpSplit tp_split(Role r, std::string_view module);

// The key of the fusion group a loader fuses this module into (members must share
// weight_scale_2), or "" when it is not fused. Example: "model.layers.0.self_attn.{q,k,v}_proj"
// -> "model.layers.0.self_attn:qkv". `has_kv_a` tells whether the parent module holds a
// kv_a_proj_with_mqa (DeepSeek without q-LoRA fuses q_proj with it instead of q/k/v).
std::string fusion_key(std::string_view module, Role r, bool parent_has_kv_a);

// MXFP4 source tensors as gpt-oss stores them: "<m>_blocks" (E2M1 codes) and "<m>_scales" (E8M0).
// Returns "<m>" for such a name, "" for any other.
std::string mxfp4_base_name(std::string_view tensor);

// "a.b.c" -> "a.b" ("" when there is no dot); "a.b.c" -> "c".
std::string_view parent_of(std::string_view name);
std::string_view last_of(std::string_view name);

}  // namespace fp4kit::verify
