// Family tables of the engine: which tensors make up a layer, per model_type, following the
// transformers modeling files of llama, mistral, qwen2, qwen3, qwen2_moe, qwen3_moe, mixtral,
// gpt_oss and llama4 (Llama4ForCausalLM, and the text part of Llama4ForConditionalGeneration).
#include "fp4kit/engine/model_spec.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit::engine {
namespace {

bool has_linear(const Checkpoint& c, const std::string& m) {
  return c.has(m + ".weight") || c.has(m + ".weight_packed");
}

// Shape [N, K] of a linear, whatever its storage (float, NVFP4 format A or B).
std::pair<uint64_t, uint64_t> linear_shape(const Checkpoint& c, const std::string& m) {
  if (c.has(m + ".weight_packed")) {
    const auto& t = c.info(m + ".weight_packed");
    return {t.shape.at(0), t.shape.at(1) * 2};
  }
  const auto& t = c.info(m + ".weight");
  if (t.shape.size() != 2)
    throw Error(fmt::format("{}: tensor {}.weight has {} dimensions, expected 2",
                            c.dir().string(), m, t.shape.size()));
  if (t.dtype == DType::U8) return {t.shape[0], t.shape[1] * 2};  // NVFP4 format A
  return {t.shape[0], t.shape[1]};
}

LinearRef linear(const Checkpoint& c, const std::string& m) {
  if (!has_linear(c, m))
    throw Error(fmt::format("{}: tensor {}.weight is missing (engine)", c.dir().string(), m));
  auto [n, k] = linear_shape(c, m);
  LinearRef r;
  r.module = m;
  r.rows = n;
  r.cols = k;
  return r;
}

bool json_bool(const nlohmann::json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return (it != j.end() && it->is_boolean()) ? it->get<bool>() : fallback;
}
int64_t json_int(const nlohmann::json& j, const char* key, int64_t fallback) {
  auto it = j.find(key);
  return (it != j.end() && it->is_number_integer()) ? it->get<int64_t>() : fallback;
}

double json_num(const nlohmann::json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return (it != j.end() && it->is_number()) ? it->get<double>() : fallback;
}

// One gpt-oss BMM expert tensor (see BmmRef), whatever its storage; shapes checked against the
// expert count and, when known (> 0), the expected N and K.
BmmRef bmm_ref(const Checkpoint& c, const std::string& module, uint64_t experts, uint64_t want_n,
               uint64_t want_k) {
  BmmRef r;
  r.module = module;
  const std::string where = c.dir().string();
  if (c.has(module + "_blocks")) {
    const auto& b = c.info(module + "_blocks");
    if (!c.has(module + "_scales"))
      throw Error(fmt::format("{}: MXFP4 tensor {}_blocks has no {}_scales", where, module,
                              module));
    const auto& s = c.info(module + "_scales");
    if (b.dtype != DType::U8 || b.shape.size() != 4 || b.shape[3] != 16 || s.dtype != DType::U8 ||
        s.shape.size() != 3 || s.shape[0] != b.shape[0] || s.shape[1] != b.shape[1] ||
        s.shape[2] != b.shape[2])
      throw Error(fmt::format("{}: MXFP4 {}_blocks must be U8 [E, N, K/32, 16] with {}_scales U8 "
                              "[E, N, K/32]", where, module, module));
    r.storage = BmmRef::Storage::Mxfp4;
    r.n = b.shape[1];
    r.k = b.shape[2] * 32;
    if (b.shape[0] != experts)
      throw Error(fmt::format("{}: {}_blocks holds {} experts, config.json says {}", where, module,
                              b.shape[0], experts));
  } else {
    if (!c.has(module))
      throw Error(fmt::format("{}: BMM expert tensor {} (or {}_blocks) is missing (engine)", where,
                              module, module));
    const auto& t = c.info(module);
    if (t.shape.size() != 3 || t.shape[0] != experts)
      throw Error(fmt::format("{}: BMM expert tensor {} must be 3-D [{}, K, N]", where, module,
                              experts));
    if (t.dtype == DType::U8 && c.has(module + "_weight_scale")) {
      r.storage = BmmRef::Storage::Nvfp4;  // spec 4: U8 [E, K/2, N]
      r.n = t.shape[2];
      r.k = t.shape[1] * 2;
    } else if (dtype_is_float(t.dtype)) {
      r.storage = BmmRef::Storage::Float;
      r.n = t.shape[2];
      r.k = t.shape[1];
    } else {
      throw Error(fmt::format("{}: BMM expert tensor {} has dtype {} the engine cannot decode",
                              where, module, dtype_name(t.dtype)));
    }
  }
  if ((want_n > 0 && r.n != want_n) || (want_k > 0 && r.k != want_k))
    throw Error(fmt::format("{}: BMM expert tensor {} holds [{}, {}] matrices (as [N, K]), "
                            "expected [{}, {}]", where, module, r.n, r.k, want_n, want_k));
  return r;
}

// A json list of integers (no_rope_layers, moe_layers); `present` false when absent or null.
std::vector<int64_t> json_int_list(const nlohmann::json& j, const char* key, bool* present,
                                   const std::string& label) {
  std::vector<int64_t> out;
  *present = false;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array())
    throw Error(fmt::format("{}: {} must be a list of integers", label, key));
  for (const auto& v : *it) {
    if (v.is_boolean()) out.push_back(v.get<bool>() ? 1 : 0);
    else if (v.is_number_integer()) out.push_back(v.get<int64_t>());
    else throw Error(fmt::format("{}: {} must be a list of integers", label, key));
  }
  *present = true;
  return out;
}

// One Llama-4 decoder layer (Llama4TextDecoderLayer): attention flavour per layer and the
// feed_forward, dense (intermediate_size_mlp) or MoE (router, BMM experts, shared expert). The
// config rules follow Llama4TextConfig.__post_init__.
void llama4_layer(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l,
                  LayerSpec& L) {
  const nlohmann::json& text = cfg.text;
  const std::string label = (ckpt.dir() / "config.json").string();
  const std::string where = ckpt.dir().string();
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
  L.router = ff + "router";
  if (!ckpt.has(L.router + ".weight"))
    throw Error(fmt::format("{}: router {}.weight is missing", where, L.router));
  const uint64_t E = static_cast<uint64_t>(s.n_experts), H = static_cast<uint64_t>(s.hidden);
  L.bmm_experts = true;
  L.bmm_interleaved = false;
  L.bmm_gate_up = bmm_ref(ckpt, ff + "experts.gate_up_proj", E, 0, H);
  if (L.bmm_gate_up.n % 2 != 0)
    throw Error(fmt::format("{}: {} has an odd 2I = {}", where, L.bmm_gate_up.module,
                            L.bmm_gate_up.n));
  const uint64_t inter = L.bmm_gate_up.n / 2;
  L.bmm_down = bmm_ref(ckpt, ff + "experts.down_proj", E, H, inter);
  for (uint64_t e = 0; e < E; ++e) {
    ExpertRef x;
    x.prefix = fmt::format("{}experts.{}", ff, e);
    x.gate = {L.bmm_gate_up.module, "", 0, inter, H};
    x.up = x.gate;
    x.down = {L.bmm_down.module, "", 0, H, inter};
    L.experts.push_back(std::move(x));
  }
  // Llama4TextMoe always has a shared expert, added to the routed output without a gate.
  L.has_shared_expert = true;
  L.shared_gate = linear(ckpt, ff + "shared_expert.gate_proj");
  L.shared_up = linear(ckpt, ff + "shared_expert.up_proj");
  L.shared_down = linear(ckpt, ff + "shared_expert.down_proj");
}

}  // namespace

const char* family_name(Family f) {
  switch (f) {
    case Family::Llama: return "llama";
    case Family::Mistral: return "mistral";
    case Family::Qwen2: return "qwen2";
    case Family::Qwen3: return "qwen3";
    case Family::Qwen2Moe: return "qwen2_moe";
    case Family::Qwen3Moe: return "qwen3_moe";
    case Family::Mixtral: return "mixtral";
    case Family::GptOss: return "gpt_oss";
    case Family::Llama4: return "llama4";
  }
  return "?";
}

ModelSpec ModelSpec::from_checkpoint(const Checkpoint& ckpt) {
  const std::string label = (ckpt.dir() / "config.json").string();
  if (!ckpt.has_config()) throw Error(ckpt.dir().string() + ": config.json is missing (engine)");
  const ModelConfig cfg = ModelConfig::parse(ckpt.config(), label);
  const nlohmann::json& text = cfg.text;
  ModelSpec s;
  s.model_type = cfg.model_type;
  const std::string& t = cfg.model_type;
  if (t == "llama") s.family = Family::Llama;
  else if (t == "mistral") s.family = Family::Mistral;
  else if (t == "qwen2") s.family = Family::Qwen2;
  else if (t == "qwen3") s.family = Family::Qwen3;
  else if (t == "qwen2_moe") s.family = Family::Qwen2Moe;
  else if (t == "qwen3_moe") s.family = Family::Qwen3Moe;
  else if (t == "mixtral") s.family = Family::Mixtral;
  else if (t == "gpt_oss") s.family = Family::GptOss;
  else if (t == "llama4" || t == "llama4_text") s.family = Family::Llama4;
  else
    throw Error(fmt::format("{}: model_type '{}' is not supported by the engine (supported: llama, "
                            "mistral, qwen2, qwen3, qwen2_moe, qwen3_moe, mixtral, gpt_oss, "
                            "llama4)", label, t));
  // Llama-4's multimodal wrapper runs its text part (language_model.*); the vision tower is
  // never read.
  if (cfg.has_text_config && s.family != Family::Llama4)
    throw Error(label + ": multimodal wrappers (text_config) are not supported by the engine");
  auto act = text.find("hidden_act");
  if (act != text.end() && act->is_string() && *act != "silu")
    throw Error(fmt::format("{}: hidden_act '{}' is not supported (engine implements silu)", label,
                            act->get<std::string>()));
  s.hidden = cfg.hidden_size;
  s.n_layers = cfg.num_hidden_layers;
  s.n_heads = cfg.num_attention_heads;
  s.n_kv_heads = cfg.num_key_value_heads > 0 ? cfg.num_key_value_heads : cfg.num_attention_heads;
  s.head_dim = cfg.head_dim;
  s.vocab = cfg.vocab_size;
  s.eps = static_cast<float>(cfg.rms_norm_eps);
  if (s.family == Family::Llama4 && !text.contains("rms_norm_eps")) s.eps = 1e-5f;  // its default
  if (s.hidden <= 0 || s.n_layers <= 0 || s.n_heads <= 0 || s.head_dim <= 0 || s.vocab <= 0 ||
      s.n_heads % s.n_kv_heads != 0 || s.head_dim % 2 != 0 || s.head_dim > 1024)
    throw Error(fmt::format("{}: inconsistent dimensions (hidden {}, layers {}, heads {}/{}, "
                            "head_dim {}, vocab {})", label, s.hidden, s.n_layers, s.n_heads,
                            s.n_kv_heads, s.head_dim, s.vocab));
  if (s.family == Family::GptOss) {
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
    s.swiglu_alpha = static_cast<float>(json_num(text, "swiglu_alpha", 1.702));
    s.swiglu_limit = static_cast<float>(json_num(text, "swiglu_limit", 7.0));
    if (!(s.swiglu_alpha > 0.0f) || !(s.swiglu_limit > 0.0f))
      throw Error(fmt::format("{}: swiglu_alpha ({}) and swiglu_limit ({}) must be positive", label,
                              s.swiglu_alpha, s.swiglu_limit));
  } else if (s.family == Family::Llama4) {
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
  } else {
    s.rope = RopeParams::from_config(text, cfg.rope_theta, static_cast<int>(s.head_dim), label);
  }

  const bool is_moe_family = s.family == Family::Qwen2Moe || s.family == Family::Qwen3Moe ||
                             s.family == Family::Mixtral || s.family == Family::GptOss ||
                             s.family == Family::Llama4;
  s.n_experts = cfg.num_experts;
  s.top_k = cfg.num_experts_per_tok;
  if (s.family == Family::Llama4) {  // Llama4TextConfig's defaults
    if (!text.contains("num_local_experts")) s.n_experts = 16;
    if (!text.contains("num_experts_per_tok")) s.top_k = 1;
  }
  s.norm_topk = s.family == Family::Mixtral ? true : cfg.norm_topk_prob;
  if (s.family == Family::GptOss) s.norm_topk = false;  // the softmax over k already sums to 1
  if (is_moe_family && (s.n_experts <= 0 || s.top_k <= 0 || s.top_k > s.n_experts))
    throw Error(fmt::format("{}: MoE config needs 0 < num_experts_per_tok ({}) <= num_experts ({})",
                            label, s.top_k, s.n_experts));

  // Llama4ForConditionalGeneration keeps its Llama4ForCausalLM under `language_model.`.
  const std::string root =
      (s.family == Family::Llama4 && !ckpt.has("model.embed_tokens.weight") &&
       ckpt.has("language_model.model.embed_tokens.weight"))
          ? "language_model."
          : "";
  s.embed = root + "model.embed_tokens.weight";
  if (!ckpt.has(s.embed)) throw Error(ckpt.dir().string() + ": tensor " + s.embed + " is missing");
  s.final_norm = root + "model.norm.weight";
  if (!ckpt.has(s.final_norm))
    throw Error(ckpt.dir().string() + ": tensor " + s.final_norm + " is missing");
  if (has_linear(ckpt, root + "lm_head")) {
    s.lm_head = linear(ckpt, root + "lm_head");
  } else {
    // Tied embeddings (tie_word_embeddings, or simply no lm_head tensor, as transformers ties).
    s.lm_head_tied = true;
    s.lm_head.module = root + "model.embed_tokens";
    const auto& e = ckpt.info(s.embed);
    s.lm_head.rows = e.shape.at(0);
    s.lm_head.cols = e.shape.at(1);
  }

  // Sliding-window attention: Mistral/Mixtral on every layer when sliding_window is set; Qwen
  // families only where layer_types (or use_sliding_window + max_window_layers) say so.
  const int64_t window = json_int(text, "sliding_window", 0);
  const bool use_sw = json_bool(text, "use_sliding_window", false);
  const int64_t max_window_layers = json_int(text, "max_window_layers", 0);

  for (int64_t l = 0; l < s.n_layers; ++l) {
    LayerSpec L;
    L.prefix = fmt::format("{}model.layers.{}.", root, l);
    const std::string a = L.prefix + "self_attn.";
    L.q = linear(ckpt, a + "q_proj");
    L.k = linear(ckpt, a + "k_proj");
    L.v = linear(ckpt, a + "v_proj");
    L.o = linear(ckpt, a + "o_proj");
    L.qk_norm = s.family == Family::Qwen3 || s.family == Family::Qwen3Moe;
    if (L.q.rows != static_cast<uint64_t>(s.n_heads * s.head_dim) ||
        L.k.rows != static_cast<uint64_t>(s.n_kv_heads * s.head_dim) ||
        L.v.rows != L.k.rows || L.q.cols != static_cast<uint64_t>(s.hidden) ||
        L.o.cols != L.q.rows || L.o.rows != static_cast<uint64_t>(s.hidden))
      throw Error(fmt::format("{}: attention shapes of layer {} do not match config.json",
                              ckpt.dir().string(), l));
    if (s.family == Family::GptOss) {
      L.attn_sinks = true;
      if (!ckpt.has(a + "sinks"))
        throw Error(fmt::format("{}: tensor {}sinks is missing (gpt-oss attention sinks)",
                                ckpt.dir().string(), a));
      // GptOssConfig: layer_types, else sliding on even layers (0, 2, ...).
      bool sliding = l % 2 == 0;
      if (!cfg.layer_types.empty()) {
        if (static_cast<size_t>(l) >= cfg.layer_types.size())
          throw Error(fmt::format("{}: layer_types has {} entries for {} layers", label,
                                  cfg.layer_types.size(), s.n_layers));
        sliding = cfg.layer_types[static_cast<size_t>(l)] == "sliding_attention";
      }
      L.sliding_window = sliding ? static_cast<int>(window) : 0;
    } else if (s.family == Family::Mistral || s.family == Family::Mixtral) {
      L.sliding_window = static_cast<int>(window);
    } else if (s.family != Family::Llama) {
      bool sliding = use_sw && l >= max_window_layers;
      if (!cfg.layer_types.empty() && static_cast<size_t>(l) < cfg.layer_types.size())
        sliding = cfg.layer_types[static_cast<size_t>(l)] == "sliding_attention";
      L.sliding_window = sliding ? static_cast<int>(window) : 0;
    }

    if (s.family == Family::Llama4) {
      llama4_layer(ckpt, cfg, s, l, L);
      s.layers.push_back(std::move(L));
      continue;
    }
    bool moe = false;
    if (s.family == Family::GptOss) {
      // Every layer: router with bias + BMM experts [E, H, 2I] / [E, I, H] (gate/up interleaved).
      L.moe = true;
      L.bmm_experts = true;
      L.router = L.prefix + "mlp.router";
      if (!ckpt.has(L.router + ".weight"))
        throw Error(fmt::format("{}: router {}.weight is missing", ckpt.dir().string(), L.router));
      const uint64_t E = static_cast<uint64_t>(s.n_experts), H = static_cast<uint64_t>(s.hidden);
      L.bmm_gate_up = bmm_ref(ckpt, L.prefix + "mlp.experts.gate_up_proj", E, 0, H);
      if (L.bmm_gate_up.n % 2 != 0)
        throw Error(fmt::format("{}: {} has an odd 2I = {}", ckpt.dir().string(),
                                L.bmm_gate_up.module, L.bmm_gate_up.n));
      const uint64_t inter = L.bmm_gate_up.n / 2;
      L.bmm_down = bmm_ref(ckpt, L.prefix + "mlp.experts.down_proj", E, H, inter);
      for (uint64_t e = 0; e < E; ++e) {
        ExpertRef x;
        x.prefix = fmt::format("{}mlp.experts.{}", L.prefix, e);
        x.gate = {L.bmm_gate_up.module, "", 0, inter, H};
        x.up = x.gate;
        x.down = {L.bmm_down.module, "", 0, H, inter};
        L.experts.push_back(std::move(x));
      }
      s.layers.push_back(std::move(L));
      continue;
    }
    if (s.family == Family::Mixtral) {
      moe = true;
    } else if (s.family == Family::Qwen2Moe || s.family == Family::Qwen3Moe) {
      const bool mlp_only = std::find(cfg.mlp_only_layers.begin(), cfg.mlp_only_layers.end(), l) !=
                            cfg.mlp_only_layers.end();
      const int64_t step = cfg.decoder_sparse_step > 0 ? cfg.decoder_sparse_step : 1;
      moe = !mlp_only && s.n_experts > 0 && (l + 1) % step == 0;
    }
    L.moe = moe;
    if (!moe) {
      L.gate = linear(ckpt, L.prefix + "mlp.gate_proj");
      L.up = linear(ckpt, L.prefix + "mlp.up_proj");
      L.down = linear(ckpt, L.prefix + "mlp.down_proj");
    } else {
      const bool mixtral_names = ckpt.has(L.prefix + "block_sparse_moe.gate.weight");
      const std::string block = L.prefix + (mixtral_names ? "block_sparse_moe." : "mlp.");
      L.router = block + "gate";
      if (!ckpt.has(L.router + ".weight"))
        throw Error(fmt::format("{}: router {}.weight is missing", ckpt.dir().string(), L.router));
      const std::string fused_gu = block + "experts.gate_up_proj";
      const bool fused = ckpt.has(fused_gu) && ckpt.has(block + "experts.down_proj");
      uint64_t inter = 0;
      if (fused) {
        const auto& gu = ckpt.info(fused_gu);
        const auto& dn = ckpt.info(block + "experts.down_proj");
        if (gu.shape.size() != 3 || dn.shape.size() != 3 ||
            gu.shape[0] != static_cast<uint64_t>(s.n_experts) || gu.shape[1] % 2 != 0 ||
            gu.shape[2] != static_cast<uint64_t>(s.hidden) || dn.shape[0] != gu.shape[0] ||
            dn.shape[1] != static_cast<uint64_t>(s.hidden) || dn.shape[2] != gu.shape[1] / 2)
          throw Error(fmt::format("{}: fused experts {} / down_proj have unexpected shapes",
                                  ckpt.dir().string(), fused_gu));
        inter = gu.shape[1] / 2;
      }
      for (int64_t e = 0; e < s.n_experts; ++e) {
        ExpertRef x;
        x.prefix = fmt::format("{}experts.{}", block, e);
        if (fused) {
          // Output names are per expert (spec section 4); bytes come from row ranges.
          x.gate = {x.prefix + ".gate_proj", fused_gu, static_cast<uint64_t>(e) * 2 * inter,
                    inter, static_cast<uint64_t>(s.hidden)};
          x.up = {x.prefix + ".up_proj", fused_gu, static_cast<uint64_t>(e) * 2 * inter + inter,
                  inter, static_cast<uint64_t>(s.hidden)};
          x.down = {x.prefix + ".down_proj", block + "experts.down_proj",
                    static_cast<uint64_t>(e * s.hidden), static_cast<uint64_t>(s.hidden), inter};
        } else if (mixtral_names) {
          x.gate = linear(ckpt, x.prefix + ".w1");
          x.up = linear(ckpt, x.prefix + ".w3");
          x.down = linear(ckpt, x.prefix + ".w2");
        } else {
          x.gate = linear(ckpt, x.prefix + ".gate_proj");
          x.up = linear(ckpt, x.prefix + ".up_proj");
          x.down = linear(ckpt, x.prefix + ".down_proj");
        }
        L.experts.push_back(std::move(x));
      }
      if (has_linear(ckpt, block + "shared_expert.gate_proj")) {
        L.has_shared_expert = true;
        L.shared_gate = linear(ckpt, block + "shared_expert.gate_proj");
        L.shared_up = linear(ckpt, block + "shared_expert.up_proj");
        L.shared_down = linear(ckpt, block + "shared_expert.down_proj");
        if (has_linear(ckpt, block + "shared_expert_gate"))
          L.shared_expert_gate = block + "shared_expert_gate";
      }
    }
    s.layers.push_back(std::move(L));
  }
  return s;
}

}  // namespace fp4kit::engine
