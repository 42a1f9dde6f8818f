// GLM-4.5 / 4.6 MoE (transformers' glm4_moe): attention with partial rotary (rotate_half on the
// leading half of each head by default), optional per-head q/k norms (use_qk_norm) and q/k/v
// biases (attention_bias: read where present); dense MLP before first_k_dense_replace, then MoE
// with DeepSeek's group-limited sigmoid router and shared_experts. The MTP layer (past
// num_hidden_layers) is not read. Defaults are Glm4MoeConfig's.
#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/engine/families/spec_util.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit::engine {
namespace {

void configure(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s) {
  default_eps(cfg, s, 1e-5f);
  config_rope(ckpt, cfg, s, 0.5);
  configure_sigmoid_group_router(cfg, s, config_label(ckpt), 1, 1, 1.0);
}

void layer(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l, LayerSpec& L) {
  standard_attention(ckpt, s, l, L);
  L.qk_norm = json_bool(cfg.text, "use_qk_norm", false);
  first_k_dense_mlp(ckpt, cfg, s, l, 1, L);
}

}  // namespace

FamilyDef glm4_moe_family() {
  return {.id = Family::Glm4Moe, .name = "glm4_moe", .model_types = {"glm4_moe"}, .moe = true,
          .configure = configure, .layer = layer};
}

}  // namespace fp4kit::engine
