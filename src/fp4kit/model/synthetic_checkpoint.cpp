#include "fp4kit/model/synthetic_checkpoint.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/numeric/formats.hpp"

namespace fp4kit {

namespace {
namespace fs = std::filesystem;

// splitmix64: tiny, portable, good enough for synthetic weights.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (next() >> 11) * 0x1.0p-53; }
  // Box-Muller; uses only +,*,log,sqrt,cos which are correctly rounded enough to be stable.
  float normal() {
    const double u1 = uniform() + 0x1.0p-60, u2 = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
};

// One stream per tensor (seed, index in name order): tensors do not depend on each other's sizes.
Rng tensor_rng(uint64_t seed, size_t index) { return Rng{seed * 0x100000001B3ull + index * 0x9E3779B97F4A7C15ull}; }

struct Weight {
  std::string name;
  std::vector<uint64_t> shape;
  enum Kind { Normal, Ones } kind = Normal;
  float stddev = 0.02f;
};

void encode(const std::vector<float>& values, DType dtype, std::vector<uint8_t>& out) {
  out.resize(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::BF16) {
      const uint16_t b = float_to_bf16(values[i]);
      std::memcpy(&out[2 * i], &b, 2);
    } else if (dtype == DType::F16) {
      const uint16_t b = float_to_fp16(values[i]);
      std::memcpy(&out[2 * i], &b, 2);
    } else {
      std::memcpy(&out[4 * i], &values[i], 4);
    }
  }
}

uint64_t numel(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// dir must be absent or empty; created.
// Parameters of the model: the elements of every tensor but the FP8 block scales.
uint64_t parameter_count(const std::vector<TensorSpec>& specs) {
  uint64_t params = 0;
  for (const auto& sp : specs)
    if (sp.name.find("weight_scale_inv") == std::string::npos) params += numel(sp.shape);
  return params;
}

void make_empty_dir(const fs::path& dir) {
  if (fs::exists(dir) && !fs::is_empty(dir))
    throw Error(fmt::format("synthetic checkpoint: {} exists and is not empty", dir.string()));
  fs::create_directories(dir);
}

void write_json(const fs::path& p, const nlohmann::ordered_json& j) {
  std::ofstream f(p);
  f << j.dump(2) << "\n";
  if (!f) throw Error(fmt::format("cannot write {}", p.string()));
}
}  // namespace

// DeepSeek-V3's FP8 release layout (SyntheticMoeSpec says which dims).
uint64_t write_synthetic_deepseek(const fs::path& dir, const SyntheticMoeSpec& s) {
  const uint64_t H = s.hidden, I = s.moe_intermediate, E = s.experts, nh = 128, QR = 1536,
                 R = 512, dn = 128, dr = 64, dv = 128, DI = 18432;
  struct T {
    std::string name;
    std::vector<uint64_t> shape;
    bool fp8;
  };
  std::vector<T> t;
  auto lin = [&](const std::string& m, uint64_t n, uint64_t k) {
    t.push_back({m + ".weight", {n, k}, true});
    t.push_back({m + ".weight_scale_inv", {(n + 127) / 128, (k + 127) / 128}, false});
  };
  t.push_back({"model.embed_tokens.weight", {uint64_t(s.vocab), H}, false});
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l), a = p + "self_attn.";
    t.push_back({p + "input_layernorm.weight", {H}, false});
    t.push_back({p + "post_attention_layernorm.weight", {H}, false});
    lin(a + "q_a_proj", QR, H);
    t.push_back({a + "q_a_layernorm.weight", {QR}, false});
    lin(a + "q_b_proj", nh * (dn + dr), QR);
    lin(a + "kv_a_proj_with_mqa", R + dr, H);
    t.push_back({a + "kv_a_layernorm.weight", {R}, false});
    lin(a + "kv_b_proj", nh * (dn + dv), R);
    lin(a + "o_proj", H, nh * dv);
    const std::string m = p + "mlp.";
    if (l < s.dense_layers) {
      lin(m + "gate_proj", DI, H);
      lin(m + "up_proj", DI, H);
      lin(m + "down_proj", H, DI);
      continue;
    }
    t.push_back({m + "gate.weight", {E, H}, false});
    t.push_back({m + "gate.e_score_correction_bias", {E}, false});
    for (uint64_t e = 0; e < E; ++e) {
      const std::string x = fmt::format("{}experts.{}.", m, e);
      lin(x + "gate_proj", I, H);
      lin(x + "up_proj", I, H);
      lin(x + "down_proj", H, I);
    }
    lin(m + "shared_experts.gate_proj", I, H);
    lin(m + "shared_experts.up_proj", I, H);
    lin(m + "shared_experts.down_proj", H, I);
  }
  t.push_back({"model.norm.weight", {H}, false});
  t.push_back({"lm_head.weight", {uint64_t(s.vocab), H}, false});
  std::sort(t.begin(), t.end(), [](const T& a, const T& b) { return a.name < b.name; });
  std::vector<TensorSpec> specs;
  for (const auto& x : t) {
    const bool scale = x.name.find("weight_scale_inv") != std::string::npos;
    specs.push_back({x.name, scale ? DType::F32 : x.fp8 ? DType::F8_E4M3 : DType::BF16, x.shape});
  }
  const uint64_t params = parameter_count(specs);
  make_empty_dir(dir);
  CheckpointWriter writer(dir, specs, s.max_shard_bytes);
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  for (size_t i = 0; i < t.size(); ++i) {
    const auto& x = t[i];
    const uint64_t n = numel(x.shape);
    Rng rng = tensor_rng(s.seed, i);
    const bool norm = x.name.find("norm.weight") != std::string::npos;
    if (x.fp8) {
      // Random E4M3 codes of magnitude below 2 (exponent field < 8), never NaN.
      bytes.resize(n);
      for (uint64_t j = 0; j < n; j += 8) {
        const uint64_t r = rng.next();
        for (uint64_t b = 0; b < 8 && j + b < n; ++b)
          bytes[j + b] = static_cast<uint8_t>((r >> (8 * b)) & 0xBF);
      }
    } else if (x.name.find("weight_scale_inv") != std::string::npos) {
      // 1 / sqrt(K) of the linear: outputs of order one.
      const T& w = t[i - 1];  // "<m>.weight" sorts right before "<m>.weight_scale_inv"
      values.assign(n, 1.0f / std::sqrt(static_cast<float>(w.shape.at(1))));
      encode(values, DType::F32, bytes);
    } else {
      values.resize(n);
      const float sd = x.name.find("embed") != std::string::npos ? 1.0f : 0.02f;
      for (auto& v : values) v = norm ? 1.0f : rng.normal() * sd;
      encode(values, DType::BF16, bytes);
    }
    writer.write(x.name, bytes);
  }
  writer.finish();
  nlohmann::ordered_json c;
  c["architectures"] = {"DeepseekV3ForCausalLM"};
  c["model_type"] = "deepseek_v3";
  c["hidden_size"] = H;
  c["intermediate_size"] = DI;
  c["moe_intermediate_size"] = I;
  c["num_hidden_layers"] = s.layers;
  c["first_k_dense_replace"] = s.dense_layers;
  c["num_attention_heads"] = nh;
  c["num_key_value_heads"] = nh;
  c["n_routed_experts"] = E;
  c["n_shared_experts"] = 1;
  c["num_experts_per_tok"] = s.top_k;
  c["n_group"] = E % 8 == 0 ? 8 : 1;
  c["topk_group"] = E % 8 == 0 ? 4 : 1;
  c["routed_scaling_factor"] = 2.5;
  c["norm_topk_prob"] = true;
  c["q_lora_rank"] = QR;
  c["kv_lora_rank"] = R;
  c["qk_nope_head_dim"] = dn;
  c["qk_rope_head_dim"] = dr;
  c["v_head_dim"] = dv;
  c["head_dim"] = dr;  // DeepseekV3Config: head_dim = qk_rope_head_dim
  c["vocab_size"] = s.vocab;
  c["max_position_embeddings"] = 163840;
  c["rms_norm_eps"] = 1e-6;
  c["rope_theta"] = 10000.0;
  c["rope_scaling"] = {{"type", "yarn"}, {"factor", 40}, {"beta_fast", 32}, {"beta_slow", 1},
                       {"mscale", 1.0}, {"mscale_all_dim", 1.0},
                       {"original_max_position_embeddings", 4096}};
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = false;
  c["torch_dtype"] = "bfloat16";
  c["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"},
                              {"activation_scheme", "dynamic"},
                              {"weight_block_size", {128, 128}}};
  write_json(dir / "config.json", c);
  return params;
}

uint64_t write_synthetic_moe(const fs::path& dir, const SyntheticMoeSpec& s) {
  if (s.model_type == "deepseek_v3") return write_synthetic_deepseek(dir, s);
  if (s.dtype != DType::BF16 && s.dtype != DType::F16 && s.dtype != DType::F32)
    throw Error("synthetic checkpoint: dtype must be BF16, F16 or F32");
  const bool mixtral = s.model_type == "mixtral";
  std::vector<Weight> w;
  const uint64_t H = s.hidden, I = s.moe_intermediate, E = s.experts;
  const uint64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  // Embeddings and lm_head wide enough that next-token distributions are peaked, so top-1
  // agreement and KL divergence in the demo's eval mean something.
  w.push_back({"model.embed_tokens.weight", {uint64_t(s.vocab), H}, Weight::Normal, 1.0f});
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    w.push_back({p + "input_layernorm.weight", {H}, Weight::Ones});
    w.push_back({p + "post_attention_layernorm.weight", {H}, Weight::Ones});
    w.push_back({p + "self_attn.q_proj.weight", {q, H}});
    w.push_back({p + "self_attn.k_proj.weight", {kv, H}});
    w.push_back({p + "self_attn.v_proj.weight", {kv, H}});
    w.push_back({p + "self_attn.o_proj.weight", {H, q}});
    if (!mixtral) {
      w.push_back({p + "self_attn.q_norm.weight", {uint64_t(s.head_dim)}, Weight::Ones});
      w.push_back({p + "self_attn.k_norm.weight", {uint64_t(s.head_dim)}, Weight::Ones});
    }
    const std::string moe = p + (mixtral ? "block_sparse_moe." : "mlp.");
    w.push_back({moe + "gate.weight", {E, H}});
    if (s.fused_experts && !mixtral) {
      w.push_back({moe + "experts.gate_up_proj", {E, 2 * I, H}});
      w.push_back({moe + "experts.down_proj", {E, H, I}});
    } else {
      for (uint64_t e = 0; e < E; ++e) {
        const std::string x = fmt::format("{}experts.{}.", moe, e);
        // Experts differ in scale so that a mix-up of expert scales is visible.
        const float sd = 0.02f * (1.0f + 0.1f * static_cast<float>(e));
        if (mixtral) {
          w.push_back({x + "w1.weight", {I, H}, Weight::Normal, sd});
          w.push_back({x + "w2.weight", {H, I}, Weight::Normal, sd});
          w.push_back({x + "w3.weight", {I, H}, Weight::Normal, sd});
        } else {
          w.push_back({x + "gate_proj.weight", {I, H}, Weight::Normal, sd});
          w.push_back({x + "up_proj.weight", {I, H}, Weight::Normal, sd});
          w.push_back({x + "down_proj.weight", {H, I}, Weight::Normal, sd});
        }
      }
    }
  }
  w.push_back({"model.norm.weight", {H}, Weight::Ones});
  if (!s.tie_embeddings)
    w.push_back({"lm_head.weight", {uint64_t(s.vocab), H}, Weight::Normal, 0.1f});
  std::sort(w.begin(), w.end(), [](const Weight& a, const Weight& b) { return a.name < b.name; });

  std::vector<TensorSpec> specs;
  for (const auto& x : w) specs.push_back({x.name, s.dtype, x.shape});
  const uint64_t params = parameter_count(specs);
  make_empty_dir(dir);
  CheckpointWriter writer(dir, specs, s.max_shard_bytes);
  std::vector<float> values;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < w.size(); ++i) {
    const auto& x = w[i];
    const uint64_t n = numel(x.shape);
    values.assign(n, 1.0f);
    if (x.kind == Weight::Normal) {
      Rng rng = tensor_rng(s.seed, i);
      for (auto& v : values) v = rng.normal() * x.stddev;
      // A few outliers per tensor, as real weights have.
      for (uint64_t k = 0; k < n / 4096 + 1; ++k) values[rng.next() % n] *= 8.0f;
    }
    encode(values, s.dtype, bytes);
    writer.write(x.name, bytes);
  }
  writer.finish();

  const char* dtype_name_json =
      s.dtype == DType::BF16 ? "bfloat16" : (s.dtype == DType::F16 ? "float16" : "float32");
  nlohmann::ordered_json c;
  c["architectures"] = {mixtral ? "MixtralForCausalLM" : "Qwen3MoeForCausalLM"};
  c["model_type"] = s.model_type;
  c["hidden_size"] = H;
  c["num_hidden_layers"] = s.layers;
  c["num_attention_heads"] = s.heads;
  c["num_key_value_heads"] = s.kv_heads;
  c["head_dim"] = s.head_dim;
  c["vocab_size"] = s.vocab;
  c["max_position_embeddings"] = 4096;
  c["rms_norm_eps"] = 1e-6;
  c["rope_theta"] = 1000000.0;
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = s.tie_embeddings;
  c["torch_dtype"] = dtype_name_json;
  if (mixtral) {
    c["intermediate_size"] = I;
    c["num_local_experts"] = E;
    c["num_experts_per_tok"] = s.top_k;
    c["sliding_window"] = nullptr;
  } else {
    c["intermediate_size"] = I * 4;
    c["moe_intermediate_size"] = I;
    c["num_experts"] = E;
    c["num_experts_per_tok"] = s.top_k;
    c["norm_topk_prob"] = true;
    c["decoder_sparse_step"] = 1;
    c["mlp_only_layers"] = nlohmann::ordered_json::array();
    c["attention_bias"] = false;
  }
  write_json(dir / "config.json", c);
  write_json(dir / "generation_config.json", {{"bos_token_id", 1}, {"eos_token_id", 2}});
  return params;
}

}  // namespace fp4kit
