// The plain decoder families (transformers' llama, mistral, qwen2, qwen3, qwen2_moe, qwen3_moe,
// mixtral): attention (qk-norm on Qwen3), then a dense MLP or a MoE (softmax top-k router;
// per-expert, Mixtral-named or fused 3-D experts; Qwen2-MoE's gated shared expert).
#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/engine/families/spec_util.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit::engine {
namespace {

void configure(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s) {
  config_rope(ckpt, cfg, s);
  if (s.family == Family::Mixtral) s.norm_topk = true;
}

void layer(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l, LayerSpec& L) {
  const nlohmann::json& text = cfg.text;
  standard_attention(ckpt, s, l, L);
  L.qk_norm = s.family == Family::Qwen3 || s.family == Family::Qwen3Moe;
  // Sliding-window attention: Mistral/Mixtral on every layer when sliding_window is set; Qwen
  // families only where layer_types (or use_sliding_window + max_window_layers) say so.
  const int64_t window = json_int(text, "sliding_window", 0);
  if (s.family == Family::Mistral || s.family == Family::Mixtral) {
    L.sliding_window = static_cast<int>(window);
  } else if (s.family != Family::Llama) {
    bool sliding = json_bool(text, "use_sliding_window", false) &&
                   l >= json_int(text, "max_window_layers", 0);
    if (!cfg.layer_types.empty() && static_cast<size_t>(l) < cfg.layer_types.size())
      sliding = cfg.layer_types[static_cast<size_t>(l)] == "sliding_attention";
    L.sliding_window = sliding ? static_cast<int>(window) : 0;
  }
  const bool qwen_moe = s.family == Family::Qwen2Moe || s.family == Family::Qwen3Moe;
  const bool moe = s.family == Family::Mixtral || (qwen_moe && qwen_sparse_layer(cfg, s, l));
  if (!moe) {
    dense_mlp(ckpt, L);
    return;
  }
  const bool mixtral_names = ckpt.has(L.prefix + "block_sparse_moe.gate.weight");
  standard_moe(ckpt, s, L.prefix + (mixtral_names ? "block_sparse_moe." : "mlp."), mixtral_names,
               L);
}

FamilyDef def(Family id, const char* name, bool moe) {
  return {.id = id, .name = name, .model_types = {name}, .moe = moe, .configure = configure,
          .layer = layer};
}

}  // namespace

std::vector<FamilyDef> decoder_families() {
  return {
      def(Family::Llama, "llama", false),        def(Family::Mistral, "mistral", false),
      def(Family::Qwen2, "qwen2", false),        def(Family::Qwen3, "qwen3", false),
      def(Family::Qwen2Moe, "qwen2_moe", true),  def(Family::Qwen3Moe, "qwen3_moe", true),
      def(Family::Mixtral, "mixtral", true),
  };
}

}  // namespace fp4kit::engine
