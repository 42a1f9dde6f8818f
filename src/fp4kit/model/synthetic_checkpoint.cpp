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

void write_json(const fs::path& p, const nlohmann::ordered_json& j) {
  std::ofstream f(p);
  f << j.dump(2) << "\n";
  if (!f) throw Error(fmt::format("cannot write {}", p.string()));
}
}  // namespace

uint64_t write_synthetic_moe(const fs::path& dir, const SyntheticMoeSpec& s) {
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
  uint64_t params = 0;
  for (const auto& x : w) {
    specs.push_back({x.name, s.dtype, x.shape});
    uint64_t n = 1;
    for (auto d : x.shape) n *= d;
    params += n;
  }
  if (fs::exists(dir) && !fs::is_empty(dir))
    throw Error(fmt::format("synthetic checkpoint: {} exists and is not empty", dir.string()));
  fs::create_directories(dir);
  CheckpointWriter writer(dir, specs, s.max_shard_bytes);
  std::vector<float> values;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < w.size(); ++i) {
    const auto& x = w[i];
    uint64_t n = 1;
    for (auto d : x.shape) n *= d;
    values.assign(n, 1.0f);
    if (x.kind == Weight::Normal) {
      // A per-tensor stream: tensors do not depend on each other's sizes.
      Rng rng{s.seed * 0x100000001B3ull + i * 0x9E3779B97F4A7C15ull};
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
