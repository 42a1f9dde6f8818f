// DeepSeek-V2 / V2-Lite (transformers' deepseek_v2) and DeepSeek-V3 / R1 (deepseek_v3; Kimi-K2's
// kimi_k2 configs are this model too, see check_kimi_k2): multi-head latent attention (blocks/mla), dense MLP before
// first_k_dense_replace, then MoE with shared_experts. Layers past num_hidden_layers (the MTP
// layer) are never read. Config defaults are DeepseekV2Config's / DeepseekV3Config's.
// What V2 does differently (DeepseekV2TopkRouter, DeepseekV2RotaryEmbedding):
//   - router: softmax over all experts; topk_method "greedy" (DeepSeek's own code: "gready") =
//     plain top-k, "group_limited_greedy"
//     = the topk_group groups with the largest single score compete; weight = score x
//     routed_scaling_factor (default 1), never renormalised (norm_topk_prob is not read); no
//     e_score_correction_bias; scoring_func is not read (always softmax);
//   - RoPE: always on interleaved pairs (complex multiplication); rope_interleave is not read;
//   - first_k_dense_replace defaults to 0.
// V3: sigmoid scores, e_score_correction_bias for selection only, group-limited top-k (a group
// scores the sum of its two best), routed_scaling_factor (default 2.5), norm_topk_prob.
#include <cmath>

#include <fmt/format.h>

#include "fp4kit/engine/blocks/mla.hpp"
#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/engine/families/spec_util.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit::engine {

namespace {

double yarn_get_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// What V2 and V3 share: the MLA dimensions, the RoPE and the softmax scale.
void configure_mla(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, bool v2) {
  const nlohmann::json& text = cfg.text;
  const std::string label = config_label(ckpt);
  MlaDims& m = s.mla;
  auto q = text.find("q_lora_rank");
  m.q_lora_rank = q == text.end() ? 1536 : (q->is_null() ? 0 : json_int(text, "q_lora_rank", 0));
  m.kv_lora_rank = json_int(text, "kv_lora_rank", 512);
  m.qk_nope = json_int(text, "qk_nope_head_dim", 128);
  m.qk_rope = json_int(text, "qk_rope_head_dim", 64);
  m.v = json_int(text, "v_head_dim", 128);
  m.rope_interleave = v2 || json_bool(text, "rope_interleave", true);
  if (m.q_lora_rank < 0 || m.kv_lora_rank <= 0 || m.qk_nope < 0 || m.qk_rope <= 0 ||
      m.qk_rope % 2 != 0 || m.qk_rope > 1024 || m.v <= 0)
    throw Error(fmt::format("{}: MLA dimensions q_lora_rank {}, kv_lora_rank {}, "
                            "qk_nope_head_dim {}, qk_rope_head_dim {} (even), v_head_dim {} are "
                            "not usable", label, m.q_lora_rank, m.kv_lora_rank, m.qk_nope,
                            m.qk_rope, m.v));
  // DeepseekV2/V3Config: head_dim = qk_rope_head_dim (the RoPE width), whatever hidden_size /
  // num_attention_heads is. V2 overwrites a head_dim of config.json with it; V3 keeps the file's
  // value (null: hidden_size / num_attention_heads) and sizes the RoPE with it, which only works
  // when it is qk_rope_head_dim: anything else is an inconsistent config (transformers fails).
  auto hd = text.find("head_dim");
  if (!v2 && hd != text.end()) {
    const int64_t given = hd->is_null() ? (s.n_heads > 0 ? s.hidden / s.n_heads : 0)
                                        : json_int(text, "head_dim", -1);
    if (given != m.qk_rope)
      throw Error(fmt::format("{}: head_dim {} contradicts qk_rope_head_dim {} (DeepSeek-V3's "
                              "RoPE is head_dim wide and rotates the qk_rope_head_dim part of "
                              "each head)", label, hd->dump(), m.qk_rope));
  }
  s.head_dim = m.qk_rope;
  config_rope(ckpt, cfg, s);
  // yarn_apply_mscale: qk_head_dim^-1/2, times mscale(factor, mscale_all_dim)^2 for a scaled RoPE.
  double scale = 1.0 / std::sqrt(static_cast<double>(m.qk_nope + m.qk_rope));
  if (s.rope.type != "default" && s.rope.mscale_all_dim != 0.0) {
    const double ms = yarn_get_mscale(s.rope.factor, s.rope.mscale_all_dim);
    scale = scale * ms * ms;
  }
  m.softmax_scale = static_cast<float>(scale);
}

// Kimi-K2 (Instruct, Base, 0905, Thinking) publishes config.json with model_type "kimi_k2",
// architectures ["DeepseekV3ForCausalLM"] and auto_map to DeepSeek-V3's own configuration /
// modeling code: the DeepSeek-V3 model with Kimi's values (384 experts, one group, 64 heads,
// routed_scaling_factor 2.827, YaRN). transformers' kimi_k25 maps a kimi_k2 text config to
// deepseek_v3 the same way. Another architecture under that model_type is not that model.
void check_kimi_k2(const ModelConfig& cfg, const std::string& label) {
  // A multimodal wrapper around this text model: only Kimi-K2.5's (kimi_k25), whose text_config
  // is the Kimi-K2 / DeepSeek-V3 model; its vision tower is never read.
  if (cfg.has_text_config) {
    if (cfg.outer_model_type != "kimi_k25")
      throw Error(fmt::format("{}: multimodal wrapper model_type '{}' around {}: the engine runs "
                              "the text model of Kimi-K2.5 (kimi_k25) only", label,
                              cfg.outer_model_type, cfg.model_type));
    return;
  }
  if (cfg.model_type != "kimi_k2" || cfg.architectures.empty()) return;
  for (const std::string& a : cfg.architectures)
    if (a == "DeepseekV3ForCausalLM") return;
  std::string names;
  for (const std::string& a : cfg.architectures) names += (names.empty() ? "" : ", ") + a;
  throw Error(fmt::format("{}: model_type kimi_k2 with architectures [{}]: the engine runs "
                          "Kimi-K2 as published (architectures DeepseekV3ForCausalLM, the "
                          "DeepSeek-V3 model)", label, names));
}

void configure_v3(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s) {
  check_kimi_k2(cfg, (ckpt.dir() / "config.json").string());
  configure_mla(ckpt, cfg, s, false);
  configure_sigmoid_group_router(cfg, s, config_label(ckpt), 8, 4, 2.5);
}

void configure_v2(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s) {
  const nlohmann::json& text = cfg.text;
  const std::string label = config_label(ckpt);
  configure_mla(ckpt, cfg, s, true);
  s.routed_scaling = static_cast<float>(json_num(text, "routed_scaling_factor", 1.0));
  s.norm_topk = false;  // DeepseekV2TopkRouter deletes norm_topk_prob: never renormalised
  auto tm = text.find("topk_method");
  const std::string method =
      tm == text.end() || tm->is_null() ? "greedy" : (tm->is_string() ? tm->get<std::string>() : "");
  // "gready": how DeepSeek-V2's own configuration / modeling code (trust_remote_code) spells
  // greedy, in its default and in the configs written with it; transformers knows only "greedy".
  if (method == "greedy" || method == "gready") {
    s.routing = Routing::SoftmaxTopk;
    return;
  }
  if (method != "group_limited_greedy")
    throw Error(fmt::format("{}: topk_method {} is not one DeepSeek-V2 defines (greedy or "
                            "its spelling gready, group_limited_greedy)", label, tm->dump()));
  s.routing = Routing::SoftmaxGroupTopk;
  s.n_group = json_int(text, "n_group", 0);
  s.topk_group = json_int(text, "topk_group", 0);
  const int64_t per = s.n_group > 0 ? s.n_experts / s.n_group : 0;
  if (s.n_group <= 0 || s.n_experts % s.n_group != 0 || s.topk_group <= 0 ||
      s.topk_group > s.n_group || s.top_k > s.topk_group * per)
    throw Error(fmt::format("{}: group_limited_greedy needs n_group dividing the {} experts and "
                            "0 < topk_group <= n_group with num_experts_per_tok {} at most "
                            "topk_group x experts per group (n_group {}, topk_group {})",
                            label, s.n_experts, s.top_k, s.n_group, s.topk_group));
}

// Layer `l` of V2 (first_k_dense_replace default 0) or V3 (default 3).
void layer(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l, LayerSpec& L,
           int64_t default_first_k) {
  const MlaDims& m = s.mla;
  const std::string a = L.prefix + "self_attn.";
  const auto H = static_cast<uint64_t>(s.hidden), nh = static_cast<uint64_t>(s.n_heads);
  const auto qk = static_cast<uint64_t>(m.qk_nope + m.qk_rope);
  L.mla = true;
  bool ok = true;
  if (m.q_lora_rank > 0) {
    L.q_a = linear(ckpt, a + "q_a_proj");
    L.q = linear(ckpt, a + "q_b_proj");
    ok = L.q_a.rows == static_cast<uint64_t>(m.q_lora_rank) && L.q_a.cols == H &&
         L.q.cols == L.q_a.rows;
  } else {
    L.q = linear(ckpt, a + "q_proj");
    ok = L.q.cols == H;
  }
  L.kv_a = linear(ckpt, a + "kv_a_proj_with_mqa");
  L.kv_b = linear(ckpt, a + "kv_b_proj");
  L.o = linear(ckpt, a + "o_proj");
  ok = ok && L.q.rows == nh * qk && L.kv_a.cols == H &&
       L.kv_a.rows == static_cast<uint64_t>(m.kv_lora_rank + m.qk_rope) &&
       L.kv_b.cols == static_cast<uint64_t>(m.kv_lora_rank) &&
       L.kv_b.rows == nh * static_cast<uint64_t>(m.qk_nope + m.v) &&
       L.o.cols == nh * static_cast<uint64_t>(m.v) && L.o.rows == H;
  if (!ok)
    throw Error(fmt::format("{}: MLA shapes of layer {} ({}q_*_proj, kv_a_proj_with_mqa, "
                            "kv_b_proj, o_proj) do not match config.json's heads {}, q_lora_rank "
                            "{}, kv_lora_rank {}, qk_nope/rope/v head dims {}/{}/{}",
                            ckpt.dir().string(), l, a, s.n_heads, m.q_lora_rank, m.kv_lora_rank,
                            m.qk_nope, m.qk_rope, m.v));
  first_k_dense_mlp(ckpt, cfg, s, l, default_first_k, L);
}

void layer_v2(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l,
              LayerSpec& L) {
  layer(ckpt, cfg, s, l, L, 0);
}

void layer_v3(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l,
              LayerSpec& L) {
  layer(ckpt, cfg, s, l, L, 3);
}

std::vector<BlockLoader> blocks(const Checkpoint& ckpt, const ModelSpec& S, const LayerSpec& L,
                                Backend& be, bool act) {
  return {[&ckpt, &S, &L, &be, act] { return load_mla(ckpt, S, L, be, act); },
          feed_forward_block(ckpt, S, L, be, act)};
}

}  // namespace

FamilyDef deepseek_v2_family() {
  return {.id = Family::DeepseekV2, .name = "deepseek_v2", .model_types = {"deepseek_v2"},
          .moe = true, .own_head_dims = true, .configure = configure_v2, .layer = layer_v2,
          .blocks = blocks};
}

FamilyDef deepseek_v3_family() {
  return {.id = Family::DeepseekV3, .name = "deepseek_v3",
          .model_types = {"deepseek_v3", "kimi_k2"}, .text_config = true, .moe = true,
          .own_head_dims = true, .configure = configure_v3, .roots = language_model_roots,
          .layer = layer_v3, .blocks = blocks};
}

}  // namespace fp4kit::engine
