// Llama-4 text models (transformers' llama4: Llama4ForCausalLM and the text part of
// Llama4ForConditionalGeneration under language_model.): interleaved RoPE, NoPE layers with the
// query temperature, L2 qk-norm, chunked attention; dense or MoE feed_forward (top-k sigmoid
// router scaling the experts' input, split gate/up BMM experts, shared expert).
#include <algorithm>

#include <fmt/format.h>

#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/engine/families/spec_util.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit::engine {
namespace {

void configure(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s) {
  const nlohmann::json& text = cfg.text;
  const std::string label = config_label(ckpt);
  if (!text.contains("rms_norm_eps")) s.eps = 1e-5f;  // Llama4TextConfig's default
  // Llama4TextConfig's default rope_theta is 500000; llama3 scaling comes from rope_parameters
  // / rope_scaling like any family.
  const bool has_theta =
      (text.contains("rope_theta") && text["rope_theta"].is_number()) ||
      (text.contains("rope_parameters") && text["rope_parameters"].is_object() &&
       text["rope_parameters"].contains("rope_theta") &&
       text["rope_parameters"]["rope_theta"].is_number());
  s.rope = RopeParams::from_config(text, has_theta ? cfg.rope_theta : 500000.0,
                                   static_cast<int>(s.head_dim), label);
  s.rope_interleaved = true;
  s.routing = Routing::TopkSigmoidScaledInput;
  s.floor_scale = static_cast<float>(json_num(text, "floor_scale", 8192.0));
  s.attn_scale = static_cast<float>(json_num(text, "attn_scale", 0.1));
  if (!(s.floor_scale > 0.0f))
    throw Error(fmt::format("{}: floor_scale ({}) must be positive", label, s.floor_scale));
  // Llama4TextConfig's defaults
  if (!text.contains("num_local_experts")) s.n_experts = 16;
  if (!text.contains("num_experts_per_tok")) s.top_k = 1;
}

// One Llama-4 decoder layer (Llama4TextDecoderLayer): attention flavour per layer and the
// feed_forward, dense (intermediate_size_mlp) or MoE (router, BMM experts, shared expert). The
// config rules follow Llama4TextConfig.__post_init__.
void layer(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l, LayerSpec& L) {
  standard_attention(ckpt, s, l, L);
  const nlohmann::json& text = cfg.text;
  const std::string label = config_label(ckpt);
  const auto li = static_cast<size_t>(l);
  // no_rope_layers[l] == 1: the layer USES RoPE (the name is transformers'). Default: every
  // no_rope_layer_interval-th layer is NoPE. An empty list also means the default.
  bool present = false;
  std::vector<int64_t> rope_flags = json_int_list(text, "no_rope_layers", &present, label);
  if (rope_flags.empty()) {
    const int64_t interval = json_int(text, "no_rope_layer_interval", 4);
    if (interval <= 0)
      throw Error(fmt::format("{}: no_rope_layer_interval must be positive", label));
    for (int64_t i = 0; i < s.n_layers; ++i) rope_flags.push_back((i + 1) % interval != 0);
  }
  if (rope_flags.size() < static_cast<size_t>(s.n_layers))
    throw Error(fmt::format("{}: no_rope_layers has {} entries for {} layers", label,
                            rope_flags.size(), s.n_layers));
  L.rope = rope_flags[li] != 0;
  L.l2_qk_norm = L.rope && json_bool(text, "use_qk_norm", true);
  L.temperature_tuning = !L.rope && json_bool(text, "attn_temperature_tuning", true);
  // layer_types, else "chunked_attention" on RoPE layers, "full_attention" on NoPE layers.
  bool chunked = L.rope;
  if (!cfg.layer_types.empty()) {
    if (li >= cfg.layer_types.size())
      throw Error(fmt::format("{}: layer_types has {} entries for {} layers", label,
                              cfg.layer_types.size(), s.n_layers));
    const std::string& lt = cfg.layer_types[li];
    if (lt != "chunked_attention" && lt != "full_attention")
      throw Error(fmt::format("{}: layer_types[{}] = '{}' (Llama-4 has chunked_attention and "
                              "full_attention)", label, l, lt));
    chunked = lt == "chunked_attention";
  }
  if (chunked) {
    // Absent: Llama4TextConfig's 8192; null: no size (transformers then refuses the config).
    const int64_t chunk =
        json_int(text, "attention_chunk_size", text.contains("attention_chunk_size") ? 0 : 8192);
    if (chunk <= 0)
      throw Error(fmt::format("{}: layer {} uses chunked attention but attention_chunk_size is "
                              "not set (transformers refuses this config too)", label, l));
    L.attention_chunk = static_cast<int>(std::min<int64_t>(chunk, 1 << 30));
  }

  // MoE layers: moe_layers, else every interleave_moe_layer_step-th layer from step - 1.
  std::vector<int64_t> moe_layers = json_int_list(text, "moe_layers", &present, label);
  if (!present) {
    const int64_t step = json_int(text, "interleave_moe_layer_step", 1);
    if (step <= 0) throw Error(fmt::format("{}: interleave_moe_layer_step must be positive", label));
    for (int64_t i = step - 1; i < s.n_layers; i += step) moe_layers.push_back(i);
  }
  const std::string ff = L.prefix + "feed_forward.";
  L.moe = std::find(moe_layers.begin(), moe_layers.end(), l) != moe_layers.end();
  if (!L.moe) {
    L.gate = linear(ckpt, ff + "gate_proj");
    L.up = linear(ckpt, ff + "up_proj");
    L.down = linear(ckpt, ff + "down_proj");
    return;
  }
  if (s.n_experts <= 0 || s.top_k <= 0 || s.top_k > s.n_experts)
    throw Error(fmt::format("{}: MoE config needs 0 < num_experts_per_tok ({}) <= "
                            "num_local_experts ({})", label, s.top_k, s.n_experts));
  moe_router(ckpt, ff + "router", L);
  bmm_experts(ckpt, s, ff, L);
  L.bmm_interleaved = false;
  // Llama4TextMoe always has a shared expert, added to the routed output without a gate.
  L.has_shared_expert = true;
  L.shared_gate = linear(ckpt, ff + "shared_expert.gate_proj");
  L.shared_up = linear(ckpt, ff + "shared_expert.up_proj");
  L.shared_down = linear(ckpt, ff + "shared_expert.down_proj");
}

}  // namespace

FamilyDef llama4_family() {
  return {.id = Family::Llama4, .name = "llama4", .model_types = {"llama4", "llama4_text"},
          .text_config = true, .moe = true, .configure = configure, .roots = language_model_roots,
          .layer = layer};
}

}  // namespace fp4kit::engine
