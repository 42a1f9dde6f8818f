#pragma once
// Builds small NVFP4 checkpoints for the verify tests, independently of fp4kit's quantize path:
// a synthetic Qwen3-MoE-style source (q/k/v/o, mlp.gate router, experts.E.gate/up/down, norms,
// embed, lm_head), encoded with the numeric codec, named and configured by hand after
// NVFP4-SPEC.md sections 5 (ModelOpt, format A) and 6 (compressed-tensors, format B).
// A test takes the good checkpoint as a list of tensors plus configs, breaks one thing, writes it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_search.hpp"

namespace fp4kit::testing {

struct FloatTensor {
  std::vector<uint64_t> shape;
  std::vector<float> data;  // already rounded to bf16 values
};

struct MoeShape {
  int layers = 2, hidden = 64, moe_inter = 32, experts = 4, heads = 4, kv_heads = 2, head_dim = 16,
      vocab = 128;
};

inline std::string layer_prefix(int l) { return "model.layers." + std::to_string(l); }

// Source tensors, name -> values (bf16-representable), sorted by name.
inline std::map<std::string, FloatTensor> make_moe_source(const MoeShape& s = {}, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::map<std::string, FloatTensor> t;
  auto mat = [&](const std::string& name, uint64_t rows, uint64_t cols, float scale) {
    FloatTensor f{{rows, cols}, std::vector<float>(rows * cols)};
    for (auto& x : f.data) x = bf16_to_float(float_to_bf16(scale * gauss(rng)));
    t[name] = std::move(f);
  };
  auto vec = [&](const std::string& name, uint64_t n) {
    FloatTensor f{{n}, std::vector<float>(n)};
    for (auto& x : f.data) x = bf16_to_float(float_to_bf16(1.0f + 0.1f * gauss(rng)));
    t[name] = std::move(f);
  };
  const uint64_t h = s.hidden, q = uint64_t(s.heads) * s.head_dim, kv = uint64_t(s.kv_heads) * s.head_dim;
  mat("model.embed_tokens.weight", s.vocab, h, 0.5f);
  mat("lm_head.weight", s.vocab, h, 0.05f);
  vec("model.norm.weight", h);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = layer_prefix(l);
    vec(p + ".input_layernorm.weight", h);
    vec(p + ".post_attention_layernorm.weight", h);
    vec(p + ".self_attn.q_norm.weight", s.head_dim);
    vec(p + ".self_attn.k_norm.weight", s.head_dim);
    // Different magnitudes per projection so shared and unshared global scales differ.
    mat(p + ".self_attn.q_proj.weight", q, h, 0.04f);
    mat(p + ".self_attn.k_proj.weight", kv, h, 0.08f);
    mat(p + ".self_attn.v_proj.weight", kv, h, 0.02f);
    mat(p + ".self_attn.o_proj.weight", h, q, 0.03f);
    mat(p + ".mlp.gate.weight", s.experts, h, 0.1f);
    for (int e = 0; e < s.experts; ++e) {
      const std::string x = p + ".mlp.experts." + std::to_string(e);
      mat(x + ".gate_proj.weight", s.moe_inter, h, 0.05f + 0.01f * e);
      mat(x + ".up_proj.weight", s.moe_inter, h, 0.03f);
      mat(x + ".down_proj.weight", h, s.moe_inter, 0.04f);
    }
  }
  return t;
}

// The same experts stored fused, as Qwen3.5/3.6 checkpoints do: "<moe>.gate_up_proj" [E, 2I, H]
// (gate rows first) and "<moe>.down_proj" [E, H, I] (spec section 4).
inline std::map<std::string, FloatTensor> fuse_experts(std::map<std::string, FloatTensor> src,
                                                       const MoeShape& s = {}) {
  for (int l = 0; l < s.layers; ++l) {
    const std::string moe = layer_prefix(l) + ".mlp.experts";
    const uint64_t I = s.moe_inter, H = s.hidden;
    FloatTensor gu{{uint64_t(s.experts), 2 * I, H}, {}}, dn{{uint64_t(s.experts), H, I}, {}};
    for (int e = 0; e < s.experts; ++e) {
      const std::string x = moe + "." + std::to_string(e);
      for (const char* proj : {".gate_proj.weight", ".up_proj.weight"}) {
        auto& v = src.at(x + proj).data;
        gu.data.insert(gu.data.end(), v.begin(), v.end());
        src.erase(x + proj);
      }
      auto& d = src.at(x + ".down_proj.weight").data;
      dn.data.insert(dn.data.end(), d.begin(), d.end());
      src.erase(x + ".down_proj.weight");
    }
    src[moe + ".gate_up_proj"] = std::move(gu);
    src[moe + ".down_proj"] = std::move(dn);
  }
  return src;
}

struct OutTensor {
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

inline std::vector<uint8_t> f32_bytes(float v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

inline std::vector<uint8_t> bf16_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t x = float_to_bf16(v[i]);
    std::memcpy(&b[2 * i], &x, 2);
  }
  return b;
}

enum class Format { ModelOpt, CompressedTensors };

// A checkpoint held in memory: tensors by name, config.json and hf_quant_config.json.
struct MemCheckpoint {
  std::map<std::string, OutTensor> tensors;
  nlohmann::json config;
  std::optional<nlohmann::json> hf_quant;
  Format format = Format::ModelOpt;
  bool w4a4 = true;
  bool searched_scales = false;  // block scales by the MSE search (quantize --scales mse)

  OutTensor& at(const std::string& name) { return tensors.at(name); }
  void set_f32(const std::string& name, float v) { tensors.at(name).bytes = f32_bytes(v); }
  float get_f32(const std::string& name) const {
    float v;
    std::memcpy(&v, tensors.at(name).bytes.data(), 4);
    return v;
  }
  void erase(const std::string& name) {
    if (!tensors.erase(name)) throw std::runtime_error("fixture: no tensor " + name);
  }
  // Adds an exclusion to every config that carries one.
  void add_exclusion(const std::string& pattern) {
    config["quantization_config"]["ignore"].push_back(pattern);
    if (hf_quant) (*hf_quant)["quantization"]["exclude_modules"].push_back(pattern);
  }
  void remove_exclusion(const std::string& pattern) {
    auto drop = [&](nlohmann::json& list) {
      nlohmann::json out = nlohmann::json::array();
      for (auto& p : list)
        if (p != pattern) out.push_back(p);
      list = out;
    };
    drop(config["quantization_config"]["ignore"]);
    if (hf_quant) drop((*hf_quant)["quantization"]["exclude_modules"]);
  }

  void write(const std::filesystem::path& dir, uint64_t max_shard_bytes = 64 * 1024) const {
    std::filesystem::create_directories(dir);
    std::vector<TensorSpec> specs;
    for (const auto& [name, t] : tensors) specs.push_back({name, t.dtype, t.shape});
    {
      CheckpointWriter w(dir, specs, max_shard_bytes);
      for (const auto& [name, t] : tensors) w.write(name, t.bytes);
      w.finish();
    }
    std::ofstream(dir / "config.json") << config.dump(2);
    if (hf_quant) std::ofstream(dir / "hf_quant_config.json") << hf_quant->dump(2);
  }
};

inline nlohmann::json moe_config(const MoeShape& s = {}) {
  return {{"architectures", {"Qwen3MoeForCausalLM"}},
          {"model_type", "qwen3_moe"},
          {"hidden_size", s.hidden},
          {"intermediate_size", 128},
          {"moe_intermediate_size", s.moe_inter},
          {"num_hidden_layers", s.layers},
          {"num_attention_heads", s.heads},
          {"num_key_value_heads", s.kv_heads},
          {"head_dim", s.head_dim},
          {"vocab_size", s.vocab},
          {"num_experts", s.experts},
          {"num_experts_per_tok", 2},
          {"torch_dtype", "bfloat16"},
          {"tie_word_embeddings", false}};
}

// Writes the source as a BF16 checkpoint with config.json.
inline void write_source(const std::filesystem::path& dir, const std::map<std::string, FloatTensor>& src,
                         const MoeShape& s = {}) {
  std::filesystem::create_directories(dir);
  MemCheckpoint m;
  for (const auto& [name, t] : src) m.tensors[name] = {DType::BF16, t.shape, bf16_bytes(t.data)};
  m.config = moe_config(s);
  m.hf_quant.reset();
  std::vector<TensorSpec> specs;
  for (const auto& [name, t] : m.tensors) specs.push_back({name, t.dtype, t.shape});
  CheckpointWriter w(dir, specs, 1ull << 30);
  for (const auto& [name, t] : m.tensors) w.write(name, t.bytes);
  w.finish();
  std::ofstream(dir / "config.json") << m.config.dump(2);
}

// Encodes one module with a given s2 and writes its tensors in the chosen format.
inline void put_quantized(MemCheckpoint& out, const std::string& module, const FloatTensor& w,
                          float s2, std::optional<float> input_scale) {
  const uint64_t rows = w.shape[0], cols = w.shape[1];
  std::vector<uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
  if (out.searched_scales)
    nvfp4_quantize_search(w.data.data(), DType::F32, rows, cols, s2, {}, packed.data(),
                          scales.data());
  else
    nvfp4_quantize(w.data.data(), DType::F32, rows, cols, s2, packed.data(), scales.data());
  const bool ct = out.format == Format::CompressedTensors;
  out.tensors[module + (ct ? ".weight_packed" : ".weight")] = {DType::U8, {rows, cols / 2}, packed};
  out.tensors[module + ".weight_scale"] = {DType::F8_E4M3, {rows, cols / 16}, scales};
  if (ct) out.tensors[module + ".weight_global_scale"] = {DType::F32, {1}, f32_bytes(1.0f / s2)};
  else out.tensors[module + ".weight_scale_2"] = {DType::F32, {}, f32_bytes(s2)};
  if (input_scale) {
    if (ct) out.tensors[module + ".input_global_scale"] = {DType::F32, {1}, f32_bytes(1.0f / *input_scale)};
    else out.tensors[module + ".input_scale"] = {DType::F32, {}, f32_bytes(*input_scale)};
  }
}

inline float amax_of(const FloatTensor& t) {
  float a = 0;
  for (float x : t.data) a = std::max(a, std::fabs(x));
  return a;
}

struct BuildOptions {
  Format format = Format::ModelOpt;
  bool w4a4 = true;
  bool share_qkv = true;  // false: each of q/k/v gets its own s2 (the fusion bug)
  bool searched_scales = false;
};

// The good NVFP4 checkpoint: quantize q/k/v/o and every expert, keep routers, norms, embeddings
// and lm_head (spec section 7); q/k/v and each expert's gate/up share s2 (section 3); W4A4 input
// scales: one per fused group, one per projection kind across a layer's experts.
inline MemCheckpoint build_nvfp4(const std::map<std::string, FloatTensor>& src, const BuildOptions& o = {},
                                 const MoeShape& s = {}) {
  MemCheckpoint out;
  out.format = o.format;
  out.w4a4 = o.w4a4;
  out.searched_scales = o.searched_scales;
  auto input = [&](float act_amax) -> std::optional<float> {
    if (!o.w4a4) return std::nullopt;
    return nvfp4_global_scale(act_amax);
  };
  for (const auto& [name, t] : src)
    out.tensors[name] = {DType::BF16, t.shape, bf16_bytes(t.data)};  // replaced below if quantized
  auto quantize = [&](const std::string& module, float s2, std::optional<float> in) {
    out.tensors.erase(module + ".weight");
    put_quantized(out, module, src.at(module + ".weight"), s2, in);
  };
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = layer_prefix(l) + ".self_attn.";
    float qkv_amax = 0;
    for (const char* m : {"q_proj", "k_proj", "v_proj"})
      qkv_amax = std::max(qkv_amax, amax_of(src.at(p + m + ".weight")));
    for (const char* m : {"q_proj", "k_proj", "v_proj"}) {
      const float a = o.share_qkv ? qkv_amax : amax_of(src.at(p + m + ".weight"));
      quantize(p + m, nvfp4_global_scale(a), input(3.0f + l));
    }
    quantize(p + "o_proj", nvfp4_global_scale(amax_of(src.at(p + "o_proj.weight"))), input(1.5f));
    const std::string moe = layer_prefix(l) + ".mlp.experts.";
    for (int e = 0; e < s.experts; ++e) {
      const std::string x = moe + std::to_string(e);
      const float gu = std::max(amax_of(src.at(x + ".gate_proj.weight")),
                                amax_of(src.at(x + ".up_proj.weight")));
      quantize(x + ".gate_proj", nvfp4_global_scale(gu), input(2.0f));
      quantize(x + ".up_proj", nvfp4_global_scale(gu), input(2.0f));
      quantize(x + ".down_proj", nvfp4_global_scale(amax_of(src.at(x + ".down_proj.weight"))),
               input(0.75f));
    }
  }
  out.config = moe_config(s);
  if (o.format == Format::ModelOpt) {
    const std::string algo = o.w4a4 ? "NVFP4" : "W4A16_NVFP4";
    const nlohmann::json excl = {"lm_head", "model.layers.*.mlp.gate"};
    nlohmann::json group = {{"targets", {"Linear"}},
                            {"weights", {{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", 16}}}};
    if (o.w4a4)
      group["input_activations"] = {{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", 16}};
    out.config["quantization_config"] = {{"quant_method", "modelopt"},
                                         {"quant_algo", algo},
                                         {"config_groups", {{"group_0", group}}},
                                         {"ignore", excl},
                                         {"producer", {{"name", "fp4kit-test"}, {"version", "0"}}}};
    out.hf_quant = nlohmann::json{{"producer", {{"name", "fp4kit-test"}, {"version", "0"}}},
                                  {"quantization", {{"quant_algo", algo},
                                                    {"kv_cache_quant_algo", nullptr},
                                                    {"group_size", 16},
                                                    {"exclude_modules", excl}}}};
  } else {
    nlohmann::json args = {{"num_bits", 4}, {"type", "float"}, {"symmetric", true},
                           {"strategy", "tensor_group"}, {"group_size", 16}, {"dynamic", false}};
    nlohmann::json acts = nullptr;
    if (o.w4a4) {
      acts = args;
      acts["dynamic"] = "local";
    }
    out.config["quantization_config"] = {
        {"quant_method", "compressed-tensors"},
        {"format", "nvfp4-pack-quantized"},
        {"quantization_status", "compressed"},
        {"config_groups", {{"group_0", {{"targets", {"Linear"}}, {"format", "nvfp4-pack-quantized"},
                                        {"weights", args}, {"input_activations", acts}}}}},
        {"ignore", {"lm_head", "re:.*mlp\\.gate$"}},
        {"kv_cache_scheme", nullptr}};
  }
  return out;
}

}  // namespace fp4kit::testing
