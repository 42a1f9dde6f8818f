// gpt-oss (transformers' gpt_oss): attention with sinks, sliding on even layers (or as
// layer_types says), YaRN RoPE; every layer MoE: top-k-then-softmax router with bias, BMM experts
// (gate/up interleaved) with the clamped SwiGLU.
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
  // GptOssConfig's defaults where config.json is silent: rope_theta 150000 and YaRN (factor 32,
  // beta 32/1, original context 4096, no truncation).
  nlohmann::json rope_cfg = text;
  const bool has_rope = (text.contains("rope_parameters") && text["rope_parameters"].is_object()) ||
                        (text.contains("rope_scaling") && text["rope_scaling"].is_object());
  if (!has_rope)
    rope_cfg["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 32.0},
                                   {"beta_slow", 1.0}, {"truncate", false},
                                   {"original_max_position_embeddings", 4096}};
  const bool has_theta =
      (text.contains("rope_theta") && text["rope_theta"].is_number()) ||
      (has_rope && text.contains("rope_parameters") && text["rope_parameters"].is_object() &&
       text["rope_parameters"].contains("rope_theta") &&
       text["rope_parameters"]["rope_theta"].is_number());
  s.rope = RopeParams::from_config(rope_cfg, has_theta ? cfg.rope_theta : 150000.0,
                                   static_cast<int>(s.head_dim), label);
  s.routing = Routing::TopkSoftmax;
  s.norm_topk = false;  // the softmax over k already sums to 1
  s.swiglu_alpha = static_cast<float>(json_num(text, "swiglu_alpha", 1.702));
  s.swiglu_limit = static_cast<float>(json_num(text, "swiglu_limit", 7.0));
  if (!(s.swiglu_alpha > 0.0f) || !(s.swiglu_limit > 0.0f))
    throw Error(fmt::format("{}: swiglu_alpha ({}) and swiglu_limit ({}) must be positive", label,
                            s.swiglu_alpha, s.swiglu_limit));
}

void layer(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l, LayerSpec& L) {
  const std::string label = config_label(ckpt);
  standard_attention(ckpt, s, l, L);
  const std::string a = L.prefix + "self_attn.";
  L.attn_sinks = true;
  if (!ckpt.has(a + "sinks"))
    throw Error(fmt::format("{}: tensor {}sinks is missing (gpt-oss attention sinks)",
                            ckpt.dir().string(), a));
  // GptOssConfig: layer_types, else sliding on even layers (0, 2, ...).
  const std::string lt = layer_type(cfg, l, s.n_layers, label);
  const bool sliding = lt.empty() ? l % 2 == 0 : lt == "sliding_attention";
  L.sliding_window = sliding ? static_cast<int>(json_int(cfg.text, "sliding_window", 0)) : 0;

  // Every layer: router with bias + BMM experts [E, H, 2I] / [E, I, H] (gate/up interleaved).
  moe_router(ckpt, L.prefix + "mlp.router", L);
  bmm_experts(ckpt, s, L.prefix + "mlp.", L);
}

}  // namespace

FamilyDef gpt_oss_family() {
  return {.id = Family::GptOss, .name = "gpt_oss", .model_types = {"gpt_oss"}, .moe = true,
          .configure = configure, .layer = layer};
}

}  // namespace fp4kit::engine
