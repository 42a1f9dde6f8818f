// The architecture tables. Names are the Hugging Face transformers checkpoint names (as saved by
// save_pretrained), written from the modeling files' module names; spec section 3/4/7 says what
// each one means for NVFP4.
#include "fp4kit/model/arch_table.hpp"

#include <string>

namespace fp4kit {
namespace {

using LA = LinearAttnPart;

// Standard attention: Llama, Mistral, Qwen2/3, Qwen-MoE, Mixtral, OLMoE, GLM-4-MoE, the full
// attention layers of Qwen3-Next / Qwen3.5 (q_norm/k_norm are norms, recognised by name).
constexpr LayerPattern kAttention[] = {
    {"self_attn.q_proj.weight", Role::AttnQ},
    {"self_attn.k_proj.weight", Role::AttnK},
    {"self_attn.v_proj.weight", Role::AttnV},
    {"self_attn.o_proj.weight", Role::AttnO},
};

// DeepSeek-V2/V3 multi-head latent attention. Without q-LoRA (V2-Lite) q_proj replaces q_a/q_b.
constexpr LayerPattern kMla[] = {
    {"self_attn.q_a_proj.weight", Role::MlaQA},
    {"self_attn.q_b_proj.weight", Role::MlaQB},
    {"self_attn.kv_a_proj_with_mqa.weight", Role::MlaKVA},
    {"self_attn.kv_b_proj.weight", Role::MlaKVB},
    {"self_attn.q_proj.weight", Role::AttnQ},
    {"self_attn.o_proj.weight", Role::AttnO},
};

// Dense SwiGLU MLP (also the dense layers of MoE models: first_k_dense_replace, mlp_only_layers).
constexpr LayerPattern kDenseMlp[] = {
    {"mlp.gate_proj.weight", Role::MlpGate},
    {"mlp.up_proj.weight", Role::MlpUp},
    {"mlp.down_proj.weight", Role::MlpDown},
};

// Routed experts under mlp.experts, per expert on disk, or fused 3-D (no .weight suffix).
constexpr LayerPattern kMoeExperts[] = {
    {"mlp.gate.weight", Role::Router},
    {"mlp.experts.{E}.gate_proj.weight", Role::ExpertGate},
    {"mlp.experts.{E}.up_proj.weight", Role::ExpertUp},
    {"mlp.experts.{E}.down_proj.weight", Role::ExpertDown},
    {"mlp.experts.gate_up_proj", Role::FusedExpertGateUp},
    {"mlp.experts.down_proj", Role::FusedExpertDown},
    {"mlp.experts.gate_up_proj.weight", Role::FusedExpertGateUp},
    {"mlp.experts.down_proj.weight", Role::FusedExpertDown},
};

// Qwen2-MoE / Qwen3-Next / Qwen3.5: one shared expert with a sigmoid gate.
constexpr LayerPattern kQwenSharedExpert[] = {
    {"mlp.shared_expert.gate_proj.weight", Role::SharedGate},
    {"mlp.shared_expert.up_proj.weight", Role::SharedUp},
    {"mlp.shared_expert.down_proj.weight", Role::SharedDown},
    {"mlp.shared_expert_gate.weight", Role::SharedExpertGate},
};

// DeepSeek-V3 / GLM-4-MoE: shared_experts (n_shared_experts fused into one MLP) and the
// router's score-correction bias (noaux_tc routing).
constexpr LayerPattern kDeepSeekSharedExperts[] = {
    {"mlp.shared_experts.gate_proj.weight", Role::SharedGate},
    {"mlp.shared_experts.up_proj.weight", Role::SharedUp},
    {"mlp.shared_experts.down_proj.weight", Role::SharedDown},
    {"mlp.gate.e_score_correction_bias", Role::RouterBias},
};

// Mixtral: block_sparse_moe, w1 = gate, w3 = up, w2 = down.
constexpr LayerPattern kMixtralExperts[] = {
    {"block_sparse_moe.gate.weight", Role::Router},
    {"block_sparse_moe.experts.{E}.w1.weight", Role::ExpertGate},
    {"block_sparse_moe.experts.{E}.w3.weight", Role::ExpertUp},
    {"block_sparse_moe.experts.{E}.w2.weight", Role::ExpertDown},
};

// gpt-oss: BMM experts [E, H, 2I] (gate/up interleaved in columns) + [E, I, H] with biases, as
// transformers saves them, or MXFP4 "_blocks" [E, N, K/32, 16] + "_scales" as openai ships them;
// a router with a bias. Attention sinks and biases are recognised by name (copied).
constexpr LayerPattern kGptOssMoe[] = {
    {"mlp.router.weight", Role::Router},
    {"mlp.router.bias", Role::Bias},
    {"mlp.experts.gate_up_proj", Role::BmmExpertGateUp},
    {"mlp.experts.down_proj", Role::BmmExpertDown},
    {"mlp.experts.gate_up_proj_blocks", Role::BmmExpertGateUp},
    {"mlp.experts.down_proj_blocks", Role::BmmExpertDown},
    {"mlp.experts.gate_up_proj_bias", Role::Bias},
    {"mlp.experts.down_proj_bias", Role::Bias},
};

// Llama-4 text layers: MoE layers hold BMM experts [E, H, 2I] (gate = first I columns) +
// [E, I, H], one shared expert and a router; the other layers a dense MLP, all under feed_forward.
constexpr LayerPattern kLlama4FeedForward[] = {
    {"feed_forward.router.weight", Role::Router},
    {"feed_forward.experts.gate_up_proj", Role::BmmExpertGateUp},
    {"feed_forward.experts.down_proj", Role::BmmExpertDown},
    {"feed_forward.shared_expert.gate_proj.weight", Role::SharedGate},
    {"feed_forward.shared_expert.up_proj.weight", Role::SharedUp},
    {"feed_forward.shared_expert.down_proj.weight", Role::SharedDown},
    {"feed_forward.gate_proj.weight", Role::MlpGate},
    {"feed_forward.up_proj.weight", Role::MlpUp},
    {"feed_forward.down_proj.weight", Role::MlpDown},
};

// Qwen3-Next (in_proj_qkvz, in_proj_ba) and Qwen3.5/3.6 (in_proj_qkv, in_proj_z, in_proj_a,
// in_proj_b) gated delta-net layers. Spec 7: kept by default; ModelOpt quantizes
// in_proj_qkv / in_proj_z / out_proj, so those are quantizable on request.
constexpr LayerPattern kLinearAttention[] = {
    {"linear_attn.in_proj_qkv.weight", Role::LinearAttn, LA::InProj},
    {"linear_attn.in_proj_z.weight", Role::LinearAttn, LA::InProj},
    {"linear_attn.in_proj_qkvz.weight", Role::LinearAttn, LA::InProj},
    {"linear_attn.out_proj.weight", Role::LinearAttn, LA::OutProj},
    {"linear_attn.in_proj_a.weight", Role::LinearAttn},
    {"linear_attn.in_proj_b.weight", Role::LinearAttn},
    {"linear_attn.in_proj_ba.weight", Role::LinearAttn},
    {"linear_attn.conv1d.weight", Role::LinearAttn},
    {"linear_attn.conv1d.bias", Role::LinearAttn},
    {"linear_attn.A_log", Role::LinearAttn},
    {"linear_attn.dt_bias", Role::LinearAttn},
    {"linear_attn.norm.weight", Role::LinearAttn},
};

std::vector<ArchFamily> make_families() {
  using T = std::span<const LayerPattern>;
  std::vector<ArchFamily> f;
  f.push_back({"llama", {"llama"}, {"LlamaForCausalLM"}, {T(kAttention), T(kDenseMlp)}});
  f.push_back({"mistral", {"mistral"}, {"MistralForCausalLM"}, {T(kAttention), T(kDenseMlp)}});
  f.push_back({"qwen2", {"qwen2"}, {"Qwen2ForCausalLM"}, {T(kAttention), T(kDenseMlp)}});
  f.push_back({"qwen3", {"qwen3"}, {"Qwen3ForCausalLM"}, {T(kAttention), T(kDenseMlp)}});
  f.push_back({"qwen2_moe", {"qwen2_moe"}, {"Qwen2MoeForCausalLM"},
               {T(kAttention), T(kDenseMlp), T(kMoeExperts), T(kQwenSharedExpert)}, true, true});
  f.push_back({"qwen3_moe", {"qwen3_moe"}, {"Qwen3MoeForCausalLM"},
               {T(kAttention), T(kDenseMlp), T(kMoeExperts)}, true, true});
  f.push_back({"qwen3_next", {"qwen3_next"}, {"Qwen3NextForCausalLM"},
               {T(kAttention), T(kLinearAttention), T(kDenseMlp), T(kMoeExperts),
                T(kQwenSharedExpert)},
               true, true});
  f.push_back({"qwen3_5_moe", {"qwen3_5_moe", "qwen3_5_moe_text"},
               {"Qwen3_5MoeForConditionalGeneration", "Qwen3_5MoeForCausalLM"},
               {T(kAttention), T(kLinearAttention), T(kDenseMlp), T(kMoeExperts),
                T(kQwenSharedExpert)},
               true, true});
  f.push_back({"mixtral", {"mixtral"}, {"MixtralForCausalLM"},
               {T(kAttention), T(kMixtralExperts)}, true, false});
  // kimi_k2: Kimi-K2 / K2 Thinking (architectures DeepseekV3ForCausalLM) and the text_config of
  // Kimi-K2.5's multimodal wrapper (KimiK25ForConditionalGeneration: text under
  // language_model.model. / language_model.lm_head, vision_tower. and mm_projector. beside it).
  f.push_back({"deepseek_v3", {"deepseek_v3", "deepseek_v2", "kimi_k2"},
               {"DeepseekV3ForCausalLM", "DeepseekV2ForCausalLM", "KimiK25ForConditionalGeneration"},
               {T(kMla), T(kDenseMlp), T(kMoeExperts), T(kDeepSeekSharedExperts)}, true, true});
  f.push_back({"glm4_moe", {"glm4_moe"}, {"Glm4MoeForCausalLM"},
               {T(kAttention), T(kDenseMlp), T(kMoeExperts), T(kDeepSeekSharedExperts)}, true,
               true});
  f.push_back({"olmoe", {"olmoe"}, {"OlmoeForCausalLM"},
               {T(kAttention), T(kDenseMlp), T(kMoeExperts)}, true, true});
  f.push_back({"gpt_oss", {"gpt_oss"}, {"GptOssForCausalLM"}, {T(kAttention), T(kGptOssMoe)},
               true, false});
  f.push_back({"llama4", {"llama4", "llama4_text"},
               {"Llama4ForConditionalGeneration", "Llama4ForCausalLM"},
               {T(kAttention), T(kLlama4FeedForward)}, true, false});
  return f;
}

ArchFamily make_generic() {
  using T = std::span<const LayerPattern>;
  // kAttention before kMla: both map q_proj/o_proj the same way.
  return {"generic", {}, {},
          {T(kAttention), T(kMla), T(kDenseMlp), T(kMoeExperts), T(kQwenSharedExpert),
           T(kDeepSeekSharedExperts), T(kMixtralExperts), T(kLinearAttention)},
          true, true, /*complete_layers=*/false};
}

}  // namespace

const std::vector<ArchFamily>& arch_families() {
  static const std::vector<ArchFamily> families = make_families();
  return families;
}

const ArchFamily& generic_family() {
  static const ArchFamily generic = make_generic();
  return generic;
}

std::string_view pattern_of(const ArchFamily& family, Role role) {
  for (const auto& table : family.tables)
    for (const LayerPattern& p : table)
      if (p.role == role) return p.pattern;
  return {};
}

const ArchFamily* find_family(std::string_view model_type,
                              const std::vector<std::string>& architectures) {
  for (const ArchFamily& f : arch_families())
    for (std::string_view t : f.model_types)
      if (t == model_type) return &f;
  if (model_type.size() > 5 && model_type.substr(model_type.size() - 5) == "_text")
    return find_family(model_type.substr(0, model_type.size() - 5), {});
  for (const std::string& a : architectures)
    for (const ArchFamily& f : arch_families())
      for (std::string_view x : f.architectures)
        if (x == a) return &f;
  return nullptr;
}

}  // namespace fp4kit
