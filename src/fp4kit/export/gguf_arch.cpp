#include "fp4kit/export/gguf_arch.hpp"

#include <fmt/core.h>

#include <cmath>
#include <map>
#include <regex>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace {

// model_type -> llama.cpp architecture, for the families fp4kit writes.
const std::map<std::string, std::string>& mapped() {
  static const std::map<std::string, std::string> m = {
      {"llama", "llama"},     {"mistral", "llama"},     {"mixtral", "llama"},
      {"qwen2", "qwen2"},     {"qwen2_moe", "qwen2moe"}, {"qwen3", "qwen3"},
      {"qwen3_moe", "qwen3moe"}, {"olmoe", "olmoe"},
      {"qwen3_5_moe", "qwen35moe"}, {"qwen3_5_moe_text", "qwen35moe"},
      {"qwen3_next", "qwen3next"},
  };
  return m;
}

// Families llama.cpp runs but not with NVFP4 experts: in llama.cpp 0c1e570 (2026-10-01, the
// version the tests run) their graphs pass no .scale to build_moe_ffn (nor to the dense and shared
// MLPs; deepseek2's MLA projections are plain ggml_mul_mat too): only attn_output and output are
// scaled. NVFP4 experts would run unscaled, so fp4kit refuses them. model_type -> {architecture,
// llama.cpp source file}.
struct Unscaled { const char* arch; const char* file; };
const std::map<std::string, Unscaled>& experts_unscaled() {
  static const std::map<std::string, Unscaled> m = {
      {"deepseek_v2", {"deepseek2", "src/models/deepseek2.cpp"}},
      {"deepseek_v3", {"deepseek2", "src/models/deepseek2.cpp"}},
      {"kimi_k2", {"deepseek2", "src/models/deepseek2.cpp"}},
      {"glm4_moe", {"glm4moe", "src/models/glm4-moe.cpp"}},
      {"gpt_oss", {"gpt-oss", "src/models/openai-moe.cpp"}},
      {"llama4", {"llama4", "src/models/llama4.cpp"}},
      {"llama4_text", {"llama4", "src/models/llama4.cpp"}},
  };
  return m;
}

uint32_t u32(int64_t v, const char* what) {
  if (v <= 0 || v > 0xFFFFFFFFll)
    throw Error(fmt::format("config.json: {} = {} cannot go into GGUF metadata", what, v));
  return static_cast<uint32_t>(v);
}

int64_t text_int(const ModelConfig& c, const char* key) {
  const auto it = c.text.find(key);
  if (it == c.text.end() || !it->is_number_integer())
    throw Error(fmt::format("config.json: {} (an integer) is needed for GGUF metadata", key));
  return it->get<int64_t>();
}

// Gated DeltaNet keys (Qwen3NextModel.set_gguf_parameters) and the layer pattern.
void add_linear_attention_metadata(GgufMetadata& m, const std::string& p, const ModelConfig& c) {
  m.add_u32(p + "ssm.conv_kernel", u32(text_int(c, "linear_conv_kernel_dim"), "linear_conv_kernel_dim"));
  m.add_u32(p + "ssm.state_size", u32(text_int(c, "linear_key_head_dim"), "linear_key_head_dim"));
  m.add_u32(p + "ssm.group_count", u32(text_int(c, "linear_num_key_heads"), "linear_num_key_heads"));
  m.add_u32(p + "ssm.time_step_rank",
            u32(text_int(c, "linear_num_value_heads"), "linear_num_value_heads"));
  m.add_u32(p + "ssm.inner_size",
            u32(text_int(c, "linear_value_head_dim") * text_int(c, "linear_num_value_heads"),
                "linear_value_head_dim * linear_num_value_heads"));
  if (text_int(c, "linear_key_head_dim") != text_int(c, "linear_value_head_dim"))
    throw Error("config.json: llama.cpp's Gated DeltaNet needs linear_key_head_dim == "
                "linear_value_head_dim");
  if (!c.layer_types.empty()) {
    if (static_cast<int64_t>(c.layer_types.size()) != c.num_hidden_layers)
      throw Error(fmt::format("config.json: layer_types has {} entries, num_hidden_layers is {}",
                              c.layer_types.size(), c.num_hidden_layers));
    std::vector<bool> recurrent;
    for (const auto& t : c.layer_types) recurrent.push_back(t == "linear_attention");
    m.add_bools(p + "attention.recurrent_layers", recurrent);
  }
  const auto fi = c.text.find("full_attention_interval");
  m.add_u32(p + "full_attention_interval",
            fi != c.text.end() && fi->is_number_integer()
                ? u32(fi->get<int64_t>(), "full_attention_interval")
                : 4);
}

}  // namespace

GgufArch gguf_arch(const ModelConfig& c, const std::string& label) {
  if (auto it = mapped().find(c.model_type); it != mapped().end()) {
    const std::string& a = it->second;
    // llama.cpp hard-codes whether an architecture renormalizes the top-k router weights
    // (qwen3moe and mixtral's llama: yes; qwen2moe, olmoe: no). A config that says otherwise
    // computes another function unless every expert is used.
    // Qwen3.5's transformers code renormalizes whatever the config says, as llama.cpp does.
    const bool renorm =
        a == "qwen3moe" || a == "qwen35moe" || a == "qwen3next" || c.model_type == "mixtral";
    const bool flag_read = c.model_type != "mixtral" && a != "qwen35moe";
    const bool all_used = c.num_experts_per_tok >= c.num_experts;
    if (c.num_experts > 0 && flag_read && c.norm_topk_prob != renorm && !all_used)
      throw Error(fmt::format(
          "{}: norm_topk_prob is {}, but llama.cpp's '{}' graph always {} the top-{} router "
          "weights: the GGUF would compute another function",
          label, c.norm_topk_prob ? "true" : "false", a, renorm ? "renormalizes" : "does not renormalize",
          c.num_experts_per_tok));
    GgufArch arch;
    arch.name = a;
    arch.permute_qk = a == "llama";
    arch.needs_output = a == "qwen2moe" || a == "olmoe";
    if (a == "qwen2" || a == "qwen2moe" || a == "olmoe")
      arch.unscaled_globs = {"*.mlp.*"}, arch.unscaled_what = "MLP tensors";
    if (a == "qwen35moe" || a == "qwen3next") {
      arch.zero_centred_norms = true;
      arch.post_attention_norm = "post_attention_norm";
    }
    if (a == "qwen3next") {
      arch.unscaled_globs = {"*.linear_attn.*"};
      arch.unscaled_what = "linear-attention tensors";
      if (!c.mlp_only_layers.empty() || c.decoder_sparse_step > 1)
        throw Error(fmt::format("{}: a Qwen3-Next with dense layers (mlp_only_layers, "
                                "decoder_sparse_step): llama.cpp's qwen3next loader needs experts "
                                "in every layer (llama.cpp 0c1e570)",
                                label));
    }
    return arch;
  }
  if (auto it = experts_unscaled().find(c.model_type); it != experts_unscaled().end())
    throw Error(fmt::format(
        "{}: model_type '{}' is llama.cpp's architecture '{}', whose graph in llama.cpp 0c1e570 "
        "applies the NVFP4 .scale only to attn_output and output, not to the routed experts "
        "(nor the dense/shared MLP{}; {}): an NVFP4 GGUF would run them unscaled, so --format "
        "gguf refuses it (--format gguf writes llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, "
        "qwen3_moe, qwen3_5_moe, qwen3_next, olmoe); use --format modelopt (vLLM, SGLang, "
        "TensorRT-LLM)",
        label, c.model_type, it->second.arch,
        std::string(it->second.arch) == "deepseek2" ? " and MLA projections" : "",
        it->second.file));
  throw Error(fmt::format("{}: model_type '{}' has no llama.cpp architecture fp4kit knows; "
                          "--format gguf writes llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, "
                          "qwen3_moe, qwen3_5_moe, qwen3_next, olmoe",
                          label, c.model_type.empty() ? "(none)" : c.model_type));
}

void add_arch_metadata(GgufMetadata& m, const GgufArch& a, const ModelConfig& c,
                       const std::string& model_name) {
  const std::string p = a.name + ".";
  const nlohmann::json& t = c.text;
  m.add_string("general.architecture", a.name);
  m.add_string("general.type", "model");
  m.add_string("general.name", model_name);
  m.add_u32("general.quantization_version", 2);
  m.add_u32("general.file_type", 39);  // LlamaFileType.MOSTLY_NVFP4 (gguf-py constants.py)
  m.add_u32(p + "block_count", u32(c.num_hidden_layers, "num_hidden_layers"));
  if (t.contains("max_position_embeddings") && t["max_position_embeddings"].is_number_integer())
    m.add_u32(p + "context_length",
              u32(t["max_position_embeddings"].get<int64_t>(), "max_position_embeddings"));
  m.add_u32(p + "embedding_length", u32(c.hidden_size, "hidden_size"));
  if (c.intermediate_size > 0)
    m.add_u32(p + "feed_forward_length", u32(c.intermediate_size, "intermediate_size"));
  m.add_u32(p + "attention.head_count", u32(c.num_attention_heads, "num_attention_heads"));
  m.add_u32(p + "attention.head_count_kv",
            u32(c.num_key_value_heads > 0 ? c.num_key_value_heads : c.num_attention_heads,
                "num_key_value_heads"));
  m.add_f32(p + "rope.freq_base", static_cast<float>(c.rope_theta));
  m.add_f32(p + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  m.add_u32(p + "attention.key_length", u32(c.head_dim, "head_dim"));
  m.add_u32(p + "attention.value_length", u32(c.head_dim, "head_dim"));
  m.add_u32(p + "rope.dimension_count", u32(rope_dims(c, a), "rotary dimensions"));
  if (a.name == "qwen35moe") {
    // Interleaved M-RoPE; text positions are equal in every section, so the sections only
    // matter for images. llama.cpp requires the key (default [11, 11, 10] as transformers).
    std::vector<int32_t> sections = {11, 11, 10};
    const nlohmann::json r = rope_scaling_of(c);
    if (r.is_object() && r.contains("mrope_section") && r["mrope_section"].is_array())
      sections = r["mrope_section"].get<std::vector<int32_t>>();
    sections.resize(4, 0);
    int64_t sum = 0;
    for (int32_t x : sections) sum += x;
    if (sum > c.head_dim)
      throw Error(fmt::format("config.json: the M-RoPE sections {} of {} (transformers' default "
                              "when mrope_section is absent) add up to more than head_dim {}: "
                              "llama.cpp aborts on such a model",
                              sum, a.name, c.head_dim));
    m.add_i32s(p + "rope.dimension_sections", sections);
  }
  if (a.name == "qwen35moe" || a.name == "qwen3next") add_linear_attention_metadata(m, p, c);
  m.add_u32(p + "vocab_size", u32(c.vocab_size, "vocab_size"));
  if (c.num_experts > 0) {
    m.add_u32(p + "expert_count", u32(c.num_experts, "num_experts"));
    m.add_u32(p + "expert_used_count", u32(c.num_experts_per_tok, "num_experts_per_tok"));
    if (c.moe_intermediate_size > 0)
      m.add_u32(p + "expert_feed_forward_length",
                u32(c.moe_intermediate_size, "moe_intermediate_size"));
    if (c.shared_expert_intermediate_size > 0)
      m.add_u32(p + "expert_shared_feed_forward_length",
                u32(c.shared_expert_intermediate_size, "shared_expert_intermediate_size"));
  }
  if (const nlohmann::json r = rope_scaling_of(c); !r.is_null()) {
    const std::string type = r.value("rope_type", r.value("type", std::string()));
    const double factor = r.contains("factor") && r["factor"].is_number() ? r["factor"].get<double>() : 0;
    if (type == "linear" && factor > 0) {
      m.add_string(p + "rope.scaling.type", "linear");
      m.add_f32(p + "rope.scaling.factor", static_cast<float>(factor));
    } else if (type == "yarn" && factor > 0 && r.contains("original_max_position_embeddings")) {
      m.add_string(p + "rope.scaling.type", "yarn");
      m.add_f32(p + "rope.scaling.factor", static_cast<float>(factor));
      m.add_u32(p + "rope.scaling.original_context_length",
                u32(r["original_max_position_embeddings"].get<int64_t>(),
                    "rope_scaling.original_max_position_embeddings"));
    } else if (type == "llama3" && a.name == "llama") {
      // Written as the rope_freqs.weight tensor (llama3_rope_factors).
    } else if (type != "default" && !type.empty()) {
      throw Error(fmt::format("config.json: rope_scaling type '{}' is not written to GGUF by "
                              "fp4kit for '{}' (linear, yarn, and llama3 for llama are)",
                              type, a.name));
    }
  }
}

std::string gguf_left_out(const std::string& hf) {
  for (const char* v : {"model.visual.", "visual.", "model.vision_tower.", "vision_tower."})
    if (hf.starts_with(v))
      return "vision tower: llama.cpp reads it from a separate mmproj GGUF, which fp4kit does "
             "not write";
  if (hf.starts_with("mtp.") || hf.starts_with("model.mtp."))
    return "multi-token-prediction layer: not written (llama.cpp runs without it)";
  return "";
}

int64_t rope_dims(const ModelConfig& c, const GgufArch& a) {
  if (a.name != "qwen35moe" && a.name != "qwen3next") return c.head_dim;
  // partial_rotary_factor: rope_parameters (transformers 5) or top level; Qwen3.5's default 0.25.
  double f = 0.25;
  const nlohmann::json r = rope_scaling_of(c);
  if (r.is_object() && r.contains("partial_rotary_factor") && r["partial_rotary_factor"].is_number())
    f = r["partial_rotary_factor"].get<double>();
  else if (c.text.contains("partial_rotary_factor") && c.text["partial_rotary_factor"].is_number())
    f = c.text["partial_rotary_factor"].get<double>();
  return static_cast<int64_t>(static_cast<double>(c.head_dim) * f);
}

std::optional<GgufTarget> gguf_target(const std::string& hf_name, const GgufArch& a,
                                      const ModelConfig& c, uint64_t ndim) {
  // Multimodal wrappers (Qwen3.5/3.6-MoE) keep the language model under model.language_model.
  std::string hf = hf_name;
  if (hf.starts_with("model.language_model.")) hf = "model." + hf.substr(21);
  std::string base = hf, suffix;
  GgufTarget t;
  // Gated DeltaNet parameters without a .weight suffix.
  const bool bare = hf.ends_with(".linear_attn.A_log") || hf.ends_with(".linear_attn.dt_bias");
  // A fused 3-D down_proj [E, H, I] (transformers 5 / Qwen3.5 checkpoints) kept whole by the plan
  // is already llama.cpp's stacked ffn_down_exps (ne {I, H, E}). A kept fused gate_up_proj would
  // need splitting and has no name here.
  if (hf.ends_with(".mlp.experts.down_proj") && ndim == 3) hf += ".weight";
  if (!bare) {
    if (const auto dot = hf.rfind('.'); dot != std::string::npos) {
      suffix = hf.substr(dot);  // ".weight" / ".bias"
      base = hf.substr(0, dot);
    }
    if (suffix != ".weight" && suffix != ".bias") return std::nullopt;
  }
  auto finish = [&](std::string name) {
    t.name = name + suffix;
    t.always_f32 = t.always_f32 || ndim <= 1 || name.ends_with("_norm") ||
                   t.values != GgufTarget::Values::Copy || t.squeeze;
    return std::optional<GgufTarget>(t);
  };
  if (a.zero_centred_norms && (base == "model.norm" || base.ends_with("layernorm") ||
                               base.ends_with("self_attn.q_norm") ||
                               base.ends_with("self_attn.k_norm")))
    t.values = GgufTarget::Values::PlusOne;
  if (base == "model.embed_tokens") return finish("token_embd");
  if (base == "model.norm") return finish("output_norm");
  if (base == "lm_head") return finish("output");

  static const std::regex layer_re(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch lm;
  if (!std::regex_match(base, lm, layer_re)) return std::nullopt;
  const std::string blk = "blk." + lm[1].str() + ".";
  const std::string rest = lm[2].str();

  static const std::regex expert_re(
      R"((?:mlp|block_sparse_moe)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj|w1|w2|w3))");
  std::smatch em;
  if (std::regex_match(rest, em, expert_re)) {
    const std::string proj = em[2].str();
    const std::string kind = proj == "gate_proj" || proj == "w1" ? "gate"
                             : proj == "up_proj" || proj == "w3" ? "up"
                                                                 : "down";
    t.expert = std::stoll(em[1].str());
    return finish(blk + "ffn_" + kind + "_exps");
  }
  if (rest.starts_with("linear_attn.")) {
    if (a.name != "qwen35moe" && a.name != "qwen3next") return std::nullopt;
    // llama.cpp tiles value heads over key heads where transformers groups them.
    const int64_t kh = text_int(c, "linear_num_key_heads");
    const int64_t vh = text_int(c, "linear_num_value_heads");
    const int64_t kd = text_int(c, "linear_key_head_dim");
    const int64_t vd = text_int(c, "linear_value_head_dim");
    if (kh <= 0 || vh % kh != 0)
      throw Error(fmt::format("config.json: linear_num_value_heads {} is not a multiple of "
                              "linear_num_key_heads {}",
                              vh, kh));
    // qwen3next's graph repeats key heads in transformers' grouped order: nothing moves.
    auto tile = [&](int64_t head_dim, uint64_t offset, bool columns) {
      if (kh != vh && a.name == "qwen35moe") t.tiling = {kh, vh / kh, head_dim, offset, columns};
    };
    const std::string part = rest.substr(12);
    // Qwen3-Next's fused projections, read by qwen3next's graph in transformers' per-key-head
    // [q, k, v, z] and [b, a] order (its "legacy" ssm_in path).
    if (part == "in_proj_qkvz") return finish(blk + "ssm_in");
    if (part == "in_proj_ba") return finish(blk + "ssm_ba");
    const uint64_t qk_rows = static_cast<uint64_t>(2 * kh * kd);
    if (part == "in_proj_qkv") return tile(vd, qk_rows, false), finish(blk + "attn_qkv");
    if (part == "in_proj_z") return tile(vd, 0, false), finish(blk + "attn_gate");
    if (part == "in_proj_a") return tile(1, 0, false), finish(blk + "ssm_alpha");
    if (part == "in_proj_b") return tile(1, 0, false), finish(blk + "ssm_beta");
    if (part == "out_proj") return tile(vd, 0, true), finish(blk + "ssm_out");
    if (part == "conv1d" && suffix == ".weight") {
      t.squeeze = true;
      return tile(vd, qk_rows, false), finish(blk + "ssm_conv1d");
    }
    if (part == "norm") return finish(blk + "ssm_norm");
    if (part == "A_log") {
      t.values = GgufTarget::Values::NegExp;  // llama.cpp reads A = -exp(A_log)
      return tile(1, 0, true), finish(blk + "ssm_a");
    }
    if (part == "dt_bias") return tile(1, 0, true), finish(blk + "ssm_dt.bias");
    return std::nullopt;
  }
  if (rest == "mlp.experts.down_proj") return finish(blk + "ffn_down_exps");
  static const std::map<std::string, std::string> names = {
      {"input_layernorm", "attn_norm"},
      {"self_attn.q_proj", "attn_q"},
      {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"},
      {"self_attn.q_norm", "attn_q_norm"},
      {"self_attn.k_norm", "attn_k_norm"},
      {"mlp.gate_proj", "ffn_gate"},
      {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},
      {"mlp.gate", "ffn_gate_inp"},
      {"block_sparse_moe.gate", "ffn_gate_inp"},
      {"mlp.shared_expert.gate_proj", "ffn_gate_shexp"},
      {"mlp.shared_expert.up_proj", "ffn_up_shexp"},
      {"mlp.shared_expert.down_proj", "ffn_down_shexp"},
      {"mlp.shared_expert_gate", "ffn_gate_inp_shexp"},
  };
  if (rest == "post_attention_layernorm") return finish(blk + a.post_attention_norm);
  const auto it = names.find(rest);
  if (it == names.end()) return std::nullopt;
  if (it->second == "ffn_gate_inp" || it->second == "ffn_gate_inp_shexp") t.always_f32 = true;
  if (a.permute_qk && suffix == ".weight") {
    if (it->second == "attn_q") t.permute_heads = c.num_attention_heads;
    if (it->second == "attn_k")
      t.permute_heads = c.num_key_value_heads > 0 ? c.num_key_value_heads : c.num_attention_heads;
  }
  if (a.permute_qk && suffix == ".bias" && (it->second == "attn_q" || it->second == "attn_k"))
    throw Error(fmt::format("{}: a q/k bias on a llama-architecture model is not written to GGUF "
                            "by fp4kit",
                            hf));
  return finish(blk + it->second);
}

std::vector<uint64_t> tiled_heads(uint64_t n, const HeadTiling& t) {
  if (t.groups <= 0) return {};
  const uint64_t g = static_cast<uint64_t>(t.groups), j = static_cast<uint64_t>(t.per_group),
                 d = static_cast<uint64_t>(t.head_dim);
  if (t.offset + g * j * d != n)
    throw Error(fmt::format("{} rows/columns cannot hold {} x {} heads of {} after {}", n, g, j, d,
                            t.offset));
  std::vector<uint64_t> of(n);
  for (uint64_t i = 0; i < t.offset; ++i) of[i] = i;
  // Output head (jj, gg) takes source head (gg, jj).
  for (uint64_t jj = 0; jj < j; ++jj)
    for (uint64_t gg = 0; gg < g; ++gg)
      for (uint64_t x = 0; x < d; ++x)
        of[t.offset + (jj * g + gg) * d + x] = t.offset + (gg * j + jj) * d + x;
  return of;
}

nlohmann::json rope_scaling_of(const ModelConfig& c) {
  if (!c.rope_scaling.is_null()) return c.rope_scaling;
  const auto it = c.text.find("rope_parameters");
  if (it != c.text.end() && it->is_object()) return *it;
  return nullptr;
}

std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  const nlohmann::json r = rope_scaling_of(c);
  auto num = [&](const char* key, double fallback) {
    return r.contains(key) && r[key].is_number() ? r[key].get<double>() : fallback;
  };
  const float base = static_cast<float>(c.rope_theta);
  const int64_t dim = c.head_dim;
  const float factor = static_cast<float>(num("factor", 8.0));
  const float low = static_cast<float>(num("low_freq_factor", 1.0));
  const float high = static_cast<float>(num("high_freq_factor", 4.0));
  const float old_ctx = static_cast<float>(num("original_max_position_embeddings", 8192));
  const float low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  std::vector<float> out;
  for (int64_t i = 0; i < dim; i += 2) {
    const float freq = 1.0f / std::pow(base, static_cast<float>(i) / static_cast<float>(dim));
    const float wavelen = 2.0f * static_cast<float>(M_PI) / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(factor);
    } else {
      const float smooth = (old_ctx / wavelen - low) / (high - low);
      out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return out;
}

std::vector<uint64_t> rope_pair_rows(uint64_t rows, int64_t heads) {
  // LlamaModel.permute: w.reshape(heads, 2, hd/2, K).swapaxes(1, 2): output row h*hd + 2i + j
  // is source row h*hd + j*hd/2 + i.
  const uint64_t hd = rows / static_cast<uint64_t>(heads);
  if (heads <= 0 || rows % static_cast<uint64_t>(heads) != 0 || hd % 2 != 0)
    throw Error(fmt::format("q/k weight with {} rows cannot be split into {} RoPE heads", rows,
                            heads));
  std::vector<uint64_t> row_of(rows);
  for (uint64_t h = 0; h < static_cast<uint64_t>(heads); ++h)
    for (uint64_t i = 0; i < hd / 2; ++i)
      for (uint64_t j = 0; j < 2; ++j) row_of[h * hd + 2 * i + j] = h * hd + j * hd / 2 + i;
  return row_of;
}

}  // namespace fp4kit
