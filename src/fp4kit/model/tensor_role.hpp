#pragma once
// What a checkpoint tensor is, decided from its name, shape and the model config.
#include <cstdint>
#include <string>
#include <string_view>

namespace fp4kit {

enum class Role {
  AttnQ, AttnK, AttnV, AttnO,          // self_attn q/k/v/o_proj
  MlaQA, MlaKVA, MlaQB, MlaKVB,        // DeepSeek MLA q_a_proj, kv_a_proj_with_mqa, q_b_proj, kv_b_proj
  MlpGate, MlpUp, MlpDown,             // dense MLP
  ExpertGate, ExpertUp, ExpertDown,    // routed expert (per-expert 2-D)
  FusedExpertGateUp, FusedExpertDown,  // fused 3-D experts [E, 2I, H] / [E, H, I] (split on output)
  BmmExpertGateUp, BmmExpertDown,      // BMM 3-D experts [E, H, 2I] / [E, I, H] (gpt-oss, Llama-4;
                                       // kept 3-D on output, spec 4), or their MXFP4 "_blocks"
  SharedGate, SharedUp, SharedDown,    // shared expert(s)
  SharedExpertGate,                    // Qwen shared_expert_gate (kept)
  Router,                              // mlp.gate / router / block_sparse_moe.gate (kept)
  RouterBias,                          // e_score_correction_bias (kept)
  LinearAttn,                          // linear_attn.* (kept by default)
  Embedding, LmHead, Norm,             // kept
  Vision, Mtp,                         // kept
  Bias,                                // a linear's bias (copied)
  OtherLinear,                         // generic 2-D linear weight recognised by name/shape
  Other,                               // anything else (copied)
};

std::string_view role_name(Role r);

}  // namespace fp4kit
