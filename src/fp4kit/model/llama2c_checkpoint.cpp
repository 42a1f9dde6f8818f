#include "fp4kit/model/llama2c_checkpoint.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fp4kit/error.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/numeric/formats.hpp"

namespace fp4kit {

namespace {
namespace fs = std::filesystem;

struct Tensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> values;
};

// Rows of one projection [heads * head_dim, in], from llama2.c's interleaved RoPE pairs
// (2i, 2i+1) to rotate_half's halves (i, i + head_dim/2): the README's
// w.reshape(heads, head_dim/2, 2, in).transpose(0, 2, 1, 3).
std::vector<float> permute_rope_rows(const float* w, int64_t heads, int64_t head_dim, int64_t in) {
  std::vector<float> out(static_cast<size_t>(heads * head_dim * in));
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const float* src = w + (h * head_dim + 2 * i + j) * in;
        std::copy(src, src + in, out.begin() + (h * head_dim + j * half + i) * in);
      }
  return out;
}

std::vector<float> slice(const std::vector<float>& v, int64_t index, int64_t count) {
  return {v.begin() + index * count, v.begin() + (index + 1) * count};
}

void write_json(const fs::path& p, const nlohmann::ordered_json& j) {
  std::ofstream f(p);
  f << j.dump(2) << "\n";
  if (!f) throw Error(fmt::format("cannot write {}", p.string()));
}

// Everything but the FFN, under the HF Llama names (shared by both layouts).
std::vector<Tensor> common_tensors(const Llama2cModel& m) {
  const auto D = static_cast<uint64_t>(m.dim), KV = static_cast<uint64_t>(m.kv_dim());
  const int64_t dd = m.dim * m.dim, kd = m.kv_dim() * m.dim;
  std::vector<Tensor> t;
  t.push_back({"model.embed_tokens.weight", {uint64_t(m.vocab), D}, m.token_embedding});
  t.push_back({"model.norm.weight", {D}, m.rms_final});
  if (!m.shared_classifier) t.push_back({"lm_head.weight", {uint64_t(m.vocab), D}, m.wcls});
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    t.push_back({p + "input_layernorm.weight", {D}, slice(m.rms_att, l, m.dim)});
    t.push_back({p + "post_attention_layernorm.weight", {D}, slice(m.rms_ffn, l, m.dim)});
    t.push_back({p + "self_attn.q_proj.weight", {D, D},
                 permute_rope_rows(m.wq.data() + l * dd, m.heads, m.head_dim(), m.dim)});
    t.push_back({p + "self_attn.k_proj.weight", {KV, D},
                 permute_rope_rows(m.wk.data() + l * kd, m.kv_heads, m.head_dim(), m.dim)});
    t.push_back({p + "self_attn.v_proj.weight", {KV, D}, slice(m.wv, l, kd)});
    t.push_back({p + "self_attn.o_proj.weight", {D, D}, slice(m.wo, l, dd)});
  }
  return t;
}

uint64_t write_tensors(const fs::path& dir, std::vector<Tensor> tensors) {
  std::sort(tensors.begin(), tensors.end(),
            [](const Tensor& a, const Tensor& b) { return a.name < b.name; });
  if (fs::exists(dir) && !fs::is_empty(dir))
    throw Error(fmt::format("{} exists and is not empty", dir.string()));
  fs::create_directories(dir);
  std::vector<TensorSpec> specs;
  uint64_t params = 0;
  for (const auto& t : tensors) {
    specs.push_back({t.name, DType::BF16, t.shape});
    params += t.values.size();
  }
  CheckpointWriter writer(dir, specs);
  std::vector<uint8_t> bytes;
  for (const auto& t : tensors) {
    bytes.resize(2 * t.values.size());
    for (size_t i = 0; i < t.values.size(); ++i) {
      const uint16_t b = float_to_bf16(t.values[i]);
      std::memcpy(&bytes[2 * i], &b, 2);
    }
    writer.write(t.name, bytes);
  }
  writer.finish();
  return params;
}

nlohmann::ordered_json config_head(const char* architecture, const char* model_type) {
  nlohmann::ordered_json c;
  c["architectures"] = {architecture};
  c["model_type"] = model_type;
  return c;
}

void write_configs(const Llama2cModel& m, const fs::path& dir, nlohmann::ordered_json c) {
  c["hidden_size"] = m.dim;
  c["num_hidden_layers"] = m.layers;
  c["num_attention_heads"] = m.heads;
  c["num_key_value_heads"] = m.kv_heads;
  c["head_dim"] = m.head_dim();
  c["vocab_size"] = m.vocab;
  c["max_position_embeddings"] = m.seq_len;
  c["rms_norm_eps"] = 1e-5;  // llama2.c's run.c
  c["rope_theta"] = 10000.0;
  c["rope_scaling"] = nullptr;
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = m.shared_classifier;
  c["bos_token_id"] = 1;
  c["eos_token_id"] = 2;
  c["torch_dtype"] = "bfloat16";
  write_json(dir / "config.json", c);
  // run.c stops when it samples BOS (how the training data delimited stories), hence [1, 2].
  nlohmann::ordered_json g;
  g["bos_token_id"] = 1;
  g["eos_token_id"] = {1, 2};
  g["do_sample"] = false;
  write_json(dir / "generation_config.json", g);
}

}  // namespace

Llama2cModel read_llama2c(std::span<const uint8_t> file, const std::string& name) {
  Llama2cModel m;
  int32_t h[7];
  if (file.size() < sizeof h)
    throw Error(fmt::format("{}: {} bytes, too short for a llama2.c header (28 bytes)", name,
                            file.size()));
  std::memcpy(h, file.data(), sizeof h);
  m.dim = h[0], m.hidden = h[1], m.layers = h[2], m.heads = h[3], m.kv_heads = h[4];
  m.shared_classifier = h[5] > 0;
  m.vocab = h[5] > 0 ? h[5] : -int64_t(h[5]);
  m.seq_len = h[6];
  if (m.dim <= 0 || m.hidden <= 0 || m.layers <= 0 || m.heads <= 0 || m.kv_heads <= 0 ||
      m.vocab <= 0 || m.seq_len <= 0 || m.dim % m.heads != 0 || m.heads % m.kv_heads != 0 ||
      m.head_dim() % 2 != 0)
    throw Error(fmt::format("{}: not a llama2.c legacy checkpoint (header dim {}, hidden {}, "
                            "layers {}, heads {}, kv_heads {}, vocab {}, seq_len {})",
                            name, h[0], h[1], h[2], h[3], h[4], h[5], h[6]));
  const int64_t L = m.layers, D = m.dim, KV = m.kv_dim(), F = m.hidden;
  const int64_t freq = m.seq_len * m.head_dim() / 2;
  struct Part {
    std::vector<float>* dst;
    int64_t count;
  };
  std::vector<float> freq_real, freq_imag;
  std::vector<Part> parts = {{&m.token_embedding, m.vocab * D}, {&m.rms_att, L * D},
                             {&m.wq, L * D * D}, {&m.wk, L * KV * D}, {&m.wv, L * KV * D},
                             {&m.wo, L * D * D}, {&m.rms_ffn, L * D}, {&m.w1, L * F * D},
                             {&m.w2, L * D * F}, {&m.w3, L * F * D}, {&m.rms_final, D},
                             {&freq_real, freq}, {&freq_imag, freq}};
  if (!m.shared_classifier) parts.push_back({&m.wcls, m.vocab * D});
  uint64_t floats = 0;
  for (const auto& p : parts) floats += static_cast<uint64_t>(p.count);
  if (file.size() != sizeof h + 4 * floats)
    throw Error(fmt::format("{}: {} bytes, but a llama2.c legacy checkpoint with this header "
                            "(dim {}, hidden {}, layers {}, heads {}, kv_heads {}, vocab {}{}, "
                            "seq_len {}) has {}",
                            name, file.size(), D, F, L, m.heads, m.kv_heads, m.vocab,
                            m.shared_classifier ? "" : " unshared", m.seq_len,
                            sizeof h + 4 * floats));
  const uint8_t* at = file.data() + sizeof h;
  for (const auto& p : parts) {
    p.dst->resize(static_cast<size_t>(p.count));
    std::memcpy(p.dst->data(), at, 4 * p.dst->size());
    at += 4 * p.dst->size();
  }
  return m;
}

uint64_t write_llama2c_as_llama(const Llama2cModel& m, const fs::path& dir) {
  auto t = common_tensors(m);
  const auto D = static_cast<uint64_t>(m.dim), F = static_cast<uint64_t>(m.hidden);
  const int64_t fd = m.hidden * m.dim;
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.mlp.", l);
    t.push_back({p + "gate_proj.weight", {F, D}, slice(m.w1, l, fd)});
    t.push_back({p + "up_proj.weight", {F, D}, slice(m.w3, l, fd)});
    t.push_back({p + "down_proj.weight", {D, F}, slice(m.w2, l, fd)});
  }
  const uint64_t params = write_tensors(dir, std::move(t));
  auto c = config_head("LlamaForCausalLM", "llama");
  c["intermediate_size"] = m.hidden;
  c["attention_bias"] = false;
  c["mlp_bias"] = false;
  write_configs(m, dir, c);
  return params;
}

uint64_t write_llama2c_as_mixtral(const Llama2cModel& m, const fs::path& dir, int64_t experts) {
  if (experts <= 0 || (experts & (experts - 1)) != 0)
    throw Error(fmt::format("split experts: {} experts is not a power of two (the down_proj "
                            "scale would not be exact in bf16)", experts));
  auto t = common_tensors(m);
  // Per expert: ceil(hidden / experts) channels rounded up to a multiple of 16 (NVFP4 blocks).
  const int64_t per = (m.hidden + experts * 16 - 1) / (experts * 16) * 16;
  const auto D = static_cast<uint64_t>(m.dim), I = static_cast<uint64_t>(per);
  const auto scale = static_cast<float>(experts);
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.block_sparse_moe.", l);
    t.push_back({p + "gate.weight", {uint64_t(experts), D},
                 std::vector<float>(static_cast<size_t>(experts * m.dim), 0.0f)});
    const float* w1 = m.w1.data() + l * m.hidden * m.dim;
    const float* w3 = m.w3.data() + l * m.hidden * m.dim;
    const float* w2 = m.w2.data() + l * m.dim * m.hidden;
    for (int64_t e = 0; e < experts; ++e) {
      std::vector<float> gate(static_cast<size_t>(per * m.dim), 0.0f), up(gate.size(), 0.0f),
          down(gate.size(), 0.0f);
      for (int64_t c = 0; c < per; ++c) {
        const int64_t ch = e * per + c;  // channel of the dense FFN; >= hidden: zero padding
        if (ch >= m.hidden) continue;
        std::copy(w1 + ch * m.dim, w1 + (ch + 1) * m.dim, gate.begin() + c * m.dim);
        std::copy(w3 + ch * m.dim, w3 + (ch + 1) * m.dim, up.begin() + c * m.dim);
        for (int64_t r = 0; r < m.dim; ++r) down[r * per + c] = w2[r * m.hidden + ch] * scale;
      }
      const std::string x = fmt::format("{}experts.{}.", p, e);
      t.push_back({x + "w1.weight", {I, D}, std::move(gate)});
      t.push_back({x + "w3.weight", {I, D}, std::move(up)});
      t.push_back({x + "w2.weight", {D, I}, std::move(down)});
    }
  }
  const uint64_t params = write_tensors(dir, std::move(t));
  auto c = config_head("MixtralForCausalLM", "mixtral");
  c["intermediate_size"] = per;
  c["num_local_experts"] = experts;
  c["num_experts_per_tok"] = experts;
  c["sliding_window"] = nullptr;
  write_configs(m, dir, c);
  return params;
}

}  // namespace fp4kit
