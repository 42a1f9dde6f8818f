// Qwen3-Next (qwen3_next) and Qwen3.5 / Qwen3.6 MoE (qwen3_5_moe: the multimodal wrapper, text under
// model.language_model., vision tower not read; qwen3_5_moe_text): Gated DeltaNet layers and,
// every full_attention_interval-th layer (or as layer_types says), gated full attention (q_proj
// doubled with a sigmoid output gate, zero-centred q/k norms, partial RoPE; multimodal RoPE
// sections collapse to plain positions for text); MoE with a softmax top-k router, per-expert or
// fused 3-D experts (read in place), a shared expert with its sigmoid gate; zero-centred norms.
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
  s.norm_one_plus = true;
  // Both configs default partial_rotary_factor to 0.25 (their __post_init__).
  config_rope(ckpt, cfg, s, 0.25);
  if (s.rope.type != "default")
    throw Error(fmt::format("{}: rope type '{}' with {} is not supported by the engine (default)",
                            label, s.rope.type, cfg.model_type));
  s.routing = Routing::SoftmaxTopk;
  // Qwen3.5's router always renormalises; Qwen3-Next's per norm_topk_prob (default true).
  s.norm_topk = s.family == Family::Qwen3_5Moe ? true : json_bool(text, "norm_topk_prob", true);
}

FamilyDef::Roots roots(const Checkpoint& ckpt, const ModelSpec&) {
  if (!ckpt.has("model.embed_tokens.weight") &&
      ckpt.has("model.language_model.embed_tokens.weight"))
    return {"model.language_model.", ""};
  return {};
}

int positive(const nlohmann::json& text, const char* key, int64_t fallback,
             const std::string& label) {
  const int64_t v = json_int(text, key, fallback);
  if (v <= 0 || v > 65536) throw Error(fmt::format("{}: {} = {} must be positive", label, key, v));
  return static_cast<int>(v);
}

void layer(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l, LayerSpec& L) {
  const nlohmann::json& text = cfg.text;
  const std::string label = config_label(ckpt);
  std::string lt = layer_type(cfg, l, s.n_layers, label);
  if (lt.empty()) {
    const int interval = positive(text, "full_attention_interval", 4, label);
    lt = (l + 1) % interval == 0 ? "full_attention" : "linear_attention";
  }
  if (lt == "linear_attention") {
    L.linear_attention = true;
    GdnSpec& G = L.gdn;
    G.nk = positive(text, "linear_num_key_heads", 16, label);
    G.nv = positive(text, "linear_num_value_heads", 32, label);
    G.dk = positive(text, "linear_key_head_dim", 128, label);
    G.dv = positive(text, "linear_value_head_dim", 128, label);
    G.kernel = positive(text, "linear_conv_kernel_dim", 4, label);
    if (G.nv % G.nk != 0)
      throw Error(fmt::format("{}: linear_num_value_heads ({}) must be a multiple of "
                              "linear_num_key_heads ({})", label, G.nv, G.nk));
    const std::string a = L.prefix + "linear_attn.";
    G.grouped = has_linear(ckpt, a + "in_proj_qkvz");
    if (G.grouped) {
      G.qkv = linear(ckpt, a + "in_proj_qkvz");
      G.b = linear(ckpt, a + "in_proj_ba");
    } else {
      G.qkv = linear(ckpt, a + "in_proj_qkv");
      G.z = linear(ckpt, a + "in_proj_z");
      G.b = linear(ckpt, a + "in_proj_b");
      G.a = linear(ckpt, a + "in_proj_a");
    }
    G.out = linear(ckpt, a + "out_proj");
    G.conv = a + "conv1d.weight";
    G.A_log = a + "A_log";
    G.dt_bias = a + "dt_bias";
    G.norm = a + "norm.weight";
    for (const std::string* t : {&G.conv, &G.A_log, &G.dt_bias, &G.norm})
      if (!ckpt.has(*t))
        throw Error(fmt::format("{}: tensor {} is missing (Gated DeltaNet)", ckpt.dir().string(), *t));
  } else if (lt == "full_attention") {
    standard_attention(ckpt, s, l, L, 2);
    L.attn_output_gate = true;
    L.qk_norm = true;
  } else {
    throw Error(fmt::format("{}: layer_types[{}] = '{}' ({} has linear_attention and "
                            "full_attention)", label, l, lt, cfg.model_type));
  }
  // Qwen3.5: every layer MoE; Qwen3-Next: Qwen-MoE's mlp_only_layers / decoder_sparse_step.
  if (s.family == Family::Qwen3Next && !qwen_sparse_layer(cfg, s, l)) {
    dense_mlp(ckpt, L);
    return;
  }
  standard_moe(ckpt, s, L.prefix + "mlp.", false, L);
}

}  // namespace

FamilyDef qwen3_next_family() {
  return {.id = Family::Qwen3Next, .name = "qwen3_next", .model_types = {"qwen3_next"},
          .moe = true, .configure = configure, .roots = roots, .layer = layer};
}

FamilyDef qwen3_5_moe_family() {
  return {.id = Family::Qwen3_5Moe, .name = "qwen3_5_moe",
          .model_types = {"qwen3_5_moe", "qwen3_5_moe_text"}, .text_config = true, .moe = true,
          .configure = configure, .roots = roots, .layer = layer};
}

}  // namespace fp4kit::engine
