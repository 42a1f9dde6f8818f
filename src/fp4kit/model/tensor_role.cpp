// Role names as they appear in plans, reports and --dry-run tables.
#include "fp4kit/model/tensor_role.hpp"

namespace fp4kit {

std::string_view role_name(Role r) {
  switch (r) {
    case Role::AttnQ: return "attn_q";
    case Role::AttnK: return "attn_k";
    case Role::AttnV: return "attn_v";
    case Role::AttnO: return "attn_o";
    case Role::MlaQA: return "mla_q_a";
    case Role::MlaKVA: return "mla_kv_a";
    case Role::MlaQB: return "mla_q_b";
    case Role::MlaKVB: return "mla_kv_b";
    case Role::MlpGate: return "mlp_gate";
    case Role::MlpUp: return "mlp_up";
    case Role::MlpDown: return "mlp_down";
    case Role::ExpertGate: return "expert_gate";
    case Role::ExpertUp: return "expert_up";
    case Role::ExpertDown: return "expert_down";
    case Role::FusedExpertGateUp: return "fused_expert_gate_up";
    case Role::FusedExpertDown: return "fused_expert_down";
    case Role::BmmExpertGateUp: return "bmm_expert_gate_up";
    case Role::BmmExpertDown: return "bmm_expert_down";
    case Role::SharedGate: return "shared_gate";
    case Role::SharedUp: return "shared_up";
    case Role::SharedDown: return "shared_down";
    case Role::SharedExpertGate: return "shared_expert_gate";
    case Role::Router: return "router";
    case Role::RouterBias: return "router_bias";
    case Role::LinearAttn: return "linear_attn";
    case Role::Embedding: return "embedding";
    case Role::LmHead: return "lm_head";
    case Role::Norm: return "norm";
    case Role::Vision: return "vision";
    case Role::Mtp: return "mtp";
    case Role::Bias: return "bias";
    case Role::OtherLinear: return "other_linear";
    case Role::Other: return "other";
  }
  return "?";
}

}  // namespace fp4kit
