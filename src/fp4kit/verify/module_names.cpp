// Name rules follow the loaders (docs/research/loaders-and-formats.md sections 2 and 5): vLLM's
// expert mapping matches "experts.<e>.<gate_proj|up_proj|down_proj>." (Mixtral w1/w3/w2), fuses
// q/k/v into qkv_proj and gate/up into gate_up_proj, forces vision prefixes unquantized, and
// skips "mtp." names.
#include "fp4kit/verify/module_names.hpp"

#include <array>
#include <cctype>

namespace fp4kit::verify {
namespace {

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

bool is_vision(std::string_view m) {
  static constexpr std::array<std::string_view, 8> kMarks = {
      "visual", "vision_tower", "vision_model", "multi_modal_projector",
      "audio",  "vision_encoder", "image_newline", "mm_projector"};
  for (auto mark : kMarks)
    if (contains(m, mark)) return true;
  return false;
}

bool is_mtp(std::string_view m, const NameContext& ctx) {
  if (starts_with(m, "mtp.") || contains(m, ".mtp.") || starts_with(m, "model.mtp")) return true;
  const int64_t layer = layer_index(m);
  return ctx.num_hidden_layers > 0 && layer >= ctx.num_hidden_layers;
}

}  // namespace

std::string_view parent_of(std::string_view name) {
  const auto dot = name.rfind('.');
  return dot == std::string_view::npos ? std::string_view{} : name.substr(0, dot);
}

std::string_view last_of(std::string_view name) {
  const auto dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

std::optional<ExpertName> parse_expert(std::string_view module) {
  // Find ".experts.<digits>.<proj>" with <proj> the last component.
  size_t pos = 0;
  while ((pos = module.find("experts.", pos)) != std::string_view::npos) {
    const bool at_component = pos == 0 || module[pos - 1] == '.';
    const size_t idx_begin = pos + 8;
    const size_t idx_end = module.find('.', idx_begin);
    if (at_component && idx_end != std::string_view::npos) {
      const auto idx = module.substr(idx_begin, idx_end - idx_begin);
      const auto proj = module.substr(idx_end + 1);
      if (all_digits(idx) && !proj.empty() && proj.find('.') == std::string_view::npos) {
        ExpertName e;
        e.moe = std::string(module.substr(0, pos + 7));
        e.index = std::stoll(std::string(idx));
        e.proj = std::string(proj);
        return e;
      }
    }
    pos = idx_begin;
  }
  return std::nullopt;
}

int64_t layer_index(std::string_view m) {
  size_t pos = 0;
  while ((pos = m.find("layers.", pos)) != std::string_view::npos) {
    if (pos == 0 || m[pos - 1] == '.') {
      const size_t b = pos + 7;
      size_t e = b;
      while (e < m.size() && std::isdigit(static_cast<unsigned char>(m[e]))) ++e;
      if (e > b && (e == m.size() || m[e] == '.')) return std::stoll(std::string(m.substr(b, e - b)));
    }
    pos += 7;
  }
  return -1;
}

std::string mxfp4_base_name(std::string_view tensor) {
  for (std::string_view tail : {std::string_view("_blocks"), std::string_view("_scales")})
    if (tensor.size() > tail.size() && tensor.ends_with(tail))
      return std::string(tensor.substr(0, tensor.size() - tail.size()));
  return "";
}

Role classify_module(std::string_view m, int dims, const NameContext& ctx) {
  const auto last = last_of(m);
  const auto parent = parent_of(m);
  if (is_vision(m)) return Role::Vision;
  if (is_mtp(m, ctx)) return Role::Mtp;
  if (contains(last, "norm") || last == "ln_f" || last == "ln_1" || last == "ln_2") return Role::Norm;
  if (contains(last, "embed") || last == "wte" || last == "wpe") return Role::Embedding;
  if (m == "lm_head" || last == "lm_head" || m == "output" || last == "output_layer")
    return Role::LmHead;
  if (last == "shared_expert_gate") return Role::SharedExpertGate;
  if (last == "e_score_correction_bias") return Role::RouterBias;
  // Routers: mlp.gate, block_sparse_moe.gate, *.router (and anything below a router module).
  if (last == "gate" || last == "router" || ends_with(parent, ".router") || parent == "router")
    return Role::Router;
  if (contains(m, "linear_attn")) return Role::LinearAttn;
  if (auto e = parse_expert(m)) {
    if (e->proj == "gate_proj" || e->proj == "w1") return Role::ExpertGate;
    if (e->proj == "up_proj" || e->proj == "w3") return Role::ExpertUp;
    if (e->proj == "down_proj" || e->proj == "w2") return Role::ExpertDown;
    return dims == 2 ? Role::OtherLinear : Role::Other;
  }
  if (ends_with(parent, "experts") && (last == "gate_up_proj" || last == "down_proj") && dims == 3)
    return last == "gate_up_proj" ? Role::FusedExpertGateUp : Role::FusedExpertDown;
  const bool shared = ends_with(parent, "shared_expert") || ends_with(parent, "shared_experts") ||
                      ends_with(parent, "shared_mlp");
  if (last == "gate_proj" || last == "w1") return shared ? Role::SharedGate : Role::MlpGate;
  if (last == "up_proj" || last == "w3") return shared ? Role::SharedUp : Role::MlpUp;
  if (last == "down_proj" || last == "w2") return shared ? Role::SharedDown : Role::MlpDown;
  if (last == "q_proj") return Role::AttnQ;
  if (last == "k_proj") return Role::AttnK;
  if (last == "v_proj") return Role::AttnV;
  if (last == "o_proj") return Role::AttnO;
  if (last == "q_a_proj") return Role::MlaQA;
  if (last == "kv_a_proj_with_mqa") return Role::MlaKVA;
  if (last == "q_b_proj") return Role::MlaQB;
  if (last == "kv_b_proj") return Role::MlaKVB;
  return dims == 2 ? Role::OtherLinear : Role::Other;
}

bool is_default_quantized_role(Role r) {
  switch (r) {
    case Role::AttnQ: case Role::AttnK: case Role::AttnV: case Role::AttnO:
    case Role::MlaQA: case Role::MlaKVA: case Role::MlaQB: case Role::MlaKVB:
    case Role::MlpGate: case Role::MlpUp: case Role::MlpDown:
    case Role::ExpertGate: case Role::ExpertUp: case Role::ExpertDown:
    case Role::FusedExpertGateUp: case Role::FusedExpertDown:
    case Role::SharedGate: case Role::SharedUp: case Role::SharedDown:
      return true;
    default:
      return false;
  }
}

bool is_never_quantized_role(Role r) {
  switch (r) {
    case Role::Router: case Role::RouterBias: case Role::SharedExpertGate:
    case Role::Norm: case Role::Embedding: case Role::Vision:
      return true;
    default:
      return false;
  }
}

TpSplit tp_split(Role r, std::string_view module) {
  switch (r) {
    case Role::AttnQ: case Role::AttnK: case Role::AttnV:
    case Role::MlaQB: case Role::MlaKVB:
    case Role::MlpGate: case Role::MlpUp:
    case Role::ExpertGate: case Role::ExpertUp:
    case Role::SharedGate: case Role::SharedUp:
      return TpSplit::Column;
    case Role::AttnO: case Role::MlpDown: case Role::ExpertDown: case Role::SharedDown:
      return TpSplit::Row;
    case Role::LinearAttn:
      if (starts_with(last_of(module), "in_proj")) return TpSplit::Column;
      if (last_of(module) == "out_proj") return TpSplit::Row;
      return TpSplit::None;
    default:
      // MLA q_a_proj / kv_a_proj_with_mqa are replicated (vLLM ReplicatedLinear): no split.
      return TpSplit::None;
  }
}

std::string fusion_key(std::string_view module, Role r, bool parent_has_kv_a) {
  const std::string parent(parent_of(module));
  switch (r) {
    case Role::AttnQ:
      // DeepSeek without q-LoRA fuses q_proj with kv_a_proj_with_mqa (spec section 3).
      return parent + (parent_has_kv_a ? ":qkv_a" : ":qkv");
    case Role::AttnK: case Role::AttnV:
      return parent + ":qkv";
    case Role::MlaQA: case Role::MlaKVA:
      return parent + ":qkv_a";
    case Role::MlpGate: case Role::MlpUp:
    case Role::ExpertGate: case Role::ExpertUp:
    case Role::SharedGate: case Role::SharedUp:
      return parent + ":gate_up";
    case Role::LinearAttn: {
      const auto last = last_of(module);
      // Qwen3.5/3.6: in_proj_qkv + in_proj_z form vLLM's in_proj_qkvz; in_proj_b + in_proj_a
      // form in_proj_ba (spec section 3).
      if (last == "in_proj_qkv" || last == "in_proj_z") return parent + ":in_proj_qkvz";
      if (last == "in_proj_b" || last == "in_proj_a") return parent + ":in_proj_ba";
      return "";
    }
    default:
      return "";
  }
}

}  // namespace fp4kit::verify
