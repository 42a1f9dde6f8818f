#pragma once
// Small gpt-oss-style checkpoints for the BMM expert tests, built from the format definitions
// and independently of fp4kit's quantize path:
//  - the source: BF16 "<experts>.gate_up_proj" [E, H, 2I] and "<experts>.down_proj" [E, I, H]
//    (one layer, router, biases, norms, embeddings), or the same experts as gpt-oss ships them,
//    MXFP4 "<m>_blocks" U8 [E, N, K/32, 16] + "<m>_scales" U8 [E, N, K/32] (E2M1 code of element
//    2j in the LOW nibble of byte j, E8M0 scale 2^(s - 127));
//  - the NVFP4 output as NVFP4-SPEC.md section 4 describes ModelOpt's export: per expert the
//    [N, K] matrix (source[e] transposed) encoded with the codec, its [N, K/2] bytes and
//    [N, K/16] scales transposed back to [K/2, N] / [K/16, N]; ONE s2 from the amax over all
//    experts and one input scale.
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "verify/nvfp4_fixture.hpp"

namespace fp4kit::testing {

struct BmmShape {
  uint64_t experts = 4, hidden = 64, inter = 32, vocab = 64;
};

inline const std::string kBmmExperts = "model.layers.0.mlp.experts";
inline const std::string kGateUp = kBmmExperts + ".gate_up_proj";  // K = H, N = 2I
inline const std::string kDown = kBmmExperts + ".down_proj";        // K = I, N = H

inline bool is_bmm_name(const std::string& n) { return n == kGateUp || n == kDown; }

// gpt-oss source values by name, bf16-representable; BMM tensors are [E, K, N].
inline std::map<std::string, FloatTensor> make_gptoss_source(const BmmShape& s = {},
                                                              uint32_t seed = 11) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::map<std::string, FloatTensor> t;
  auto fill = [&](const std::string& name, std::vector<uint64_t> shape, float scale, float offset,
                  uint64_t experts_scaled = 0) {
    uint64_t count = 1;
    for (auto d : shape) count *= d;
    FloatTensor f{shape, std::vector<float>(count)};
    const uint64_t per = experts_scaled ? count / experts_scaled : count;
    for (uint64_t i = 0; i < count; ++i) {
      // Experts of different magnitude, so the shared s2 is not every expert's own.
      const float sc = experts_scaled ? scale * (1.0f + 0.25f * static_cast<float>(i / per)) : scale;
      f.data[i] = bf16_to_float(float_to_bf16(offset + sc * gauss(rng)));
    }
    t[name] = std::move(f);
  };
  const uint64_t E = s.experts, H = s.hidden, I = s.inter;
  fill("model.embed_tokens.weight", {s.vocab, H}, 0.5f, 0);
  fill("lm_head.weight", {s.vocab, H}, 0.05f, 0);
  fill("model.norm.weight", {H}, 0.1f, 1);
  fill("model.layers.0.input_layernorm.weight", {H}, 0.1f, 1);
  fill("model.layers.0.post_attention_layernorm.weight", {H}, 0.1f, 1);
  fill("model.layers.0.mlp.router.weight", {E, H}, 0.1f, 0);
  fill("model.layers.0.mlp.router.bias", {E}, 0.1f, 0);
  fill(kGateUp, {E, H, 2 * I}, 0.04f, 0, E);
  fill(kGateUp + "_bias", {E, 2 * I}, 0.01f, 0);
  fill(kDown, {E, I, H}, 0.03f, 0, E);
  fill(kDown + "_bias", {E, H}, 0.01f, 0);
  return t;
}

inline nlohmann::json gptoss_config(const BmmShape& s = {}) {
  return {{"architectures", {"GptOssForCausalLM"}},
          {"model_type", "gpt_oss"},
          {"hidden_size", s.hidden},
          {"intermediate_size", s.inter},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 16},
          {"vocab_size", s.vocab},
          {"num_local_experts", s.experts},
          {"num_experts_per_tok", 2},
          {"torch_dtype", "bfloat16"},
          {"tie_word_embeddings", false}};
}

// E2M1 (spec section 2): sign bit 3, magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6.
inline float e2m1_value(uint8_t code) {
  static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  return (code & 8 ? -1.0f : 1.0f) * mag[code & 7];
}

// An MXFP4 expert tensor of logical shape [E, K, N]: random codes and scales, and the values
// they decode to, back in the BF16 BMM orientation [E, K, N] (gpt-oss's blocks hold the
// transpose, [E, N, K]).
struct Mxfp4Tensor {
  OutTensor blocks, scales;
  FloatTensor values;  // [E, K, N]
};

inline Mxfp4Tensor make_mxfp4(uint64_t E, uint64_t K, uint64_t N, std::mt19937& rng) {
  const uint64_t G = K / 32;
  Mxfp4Tensor m;
  m.blocks = {DType::U8, {E, N, G, 16}, std::vector<uint8_t>(E * N * G * 16)};
  m.scales = {DType::U8, {E, N, G}, std::vector<uint8_t>(E * N * G)};
  m.values = {{E, K, N}, std::vector<float>(E * K * N)};
  std::uniform_int_distribution<int> byte(0, 255), exponent(118, 122);
  for (auto& b : m.blocks.bytes) b = static_cast<uint8_t>(byte(rng));
  for (auto& s : m.scales.bytes) s = static_cast<uint8_t>(exponent(rng));
  for (uint64_t e = 0; e < E; ++e)
    for (uint64_t n = 0; n < N; ++n)
      for (uint64_t k = 0; k < K; ++k) {
        const uint64_t g = (e * N + n) * G + k / 32;  // block index
        const uint8_t byte_val = m.blocks.bytes[g * 16 + (k % 32) / 2];
        const uint8_t code = k % 2 == 0 ? (byte_val & 0x0F) : (byte_val >> 4);
        m.values.data[(e * K + k) * N + n] =
            e2m1_value(code) * std::ldexp(1.0f, int(m.scales.bytes[g]) - 127);
      }
  return m;
}

// The gpt-oss source as shipped: experts in MXFP4, the rest BF16. `values` receives the decoded
// source in BF16 orientation (what the NVFP4 output is built from).
inline MemCheckpoint make_gptoss_mxfp4_source(std::map<std::string, FloatTensor>& values,
                                              const BmmShape& s = {}, uint32_t seed = 12) {
  values = make_gptoss_source(s, seed);
  std::mt19937 rng(seed);
  MemCheckpoint src;
  for (const auto& [name, t] : values)
    if (!is_bmm_name(name)) src.tensors[name] = {DType::BF16, t.shape, bf16_bytes(t.data)};
  for (const std::string& m : {kGateUp, kDown}) {
    const auto& shape = values.at(m).shape;  // [E, K, N]
    auto mx = make_mxfp4(shape[0], shape[1], shape[2], rng);
    src.tensors[m + "_blocks"] = mx.blocks;
    src.tensors[m + "_scales"] = mx.scales;
    values[m] = mx.values;
  }
  src.config = gptoss_config(s);
  src.config["quantization_config"] = {{"quant_method", "mxfp4"},
                                       {"modules_to_not_convert", {"model.layers.*.mlp.router", "lm_head"}}};
  src.hf_quant.reset();
  return src;
}

inline MemCheckpoint gptoss_bf16_source(const std::map<std::string, FloatTensor>& values,
                                        const BmmShape& s = {}) {
  MemCheckpoint src;
  for (const auto& [name, t] : values) src.tensors[name] = {DType::BF16, t.shape, bf16_bytes(t.data)};
  src.config = gptoss_config(s);
  src.hf_quant.reset();
  return src;
}

// NVFP4 of one BMM tensor [E, K, N], ModelOpt layout.
inline void put_bmm_quantized(MemCheckpoint& out, const std::string& m, const FloatTensor& src,
                              bool w4a4) {
  const uint64_t E = src.shape[0], K = src.shape[1], N = src.shape[2];
  float amax = 0;
  for (float x : src.data) amax = std::max(amax, std::fabs(x));
  const float s2 = nvfp4_global_scale(amax);  // one for all experts
  OutTensor packed{DType::U8, {E, K / 2, N}, std::vector<uint8_t>(E * K / 2 * N)};
  OutTensor scales{DType::F8_E4M3, {E, K / 16, N}, std::vector<uint8_t>(E * K / 16 * N)};
  std::vector<float> w(N * K);
  std::vector<uint8_t> p(N * K / 2), sc(N * K / 16);
  for (uint64_t e = 0; e < E; ++e) {
    for (uint64_t k = 0; k < K; ++k)
      for (uint64_t n = 0; n < N; ++n) w[n * K + k] = src.data[(e * K + k) * N + n];
    nvfp4_quantize(w.data(), DType::F32, N, K, s2, p.data(), sc.data());
    for (uint64_t n = 0; n < N; ++n) {
      for (uint64_t j = 0; j < K / 2; ++j) packed.bytes[(e * K / 2 + j) * N + n] = p[n * K / 2 + j];
      for (uint64_t b = 0; b < K / 16; ++b) scales.bytes[(e * K / 16 + b) * N + n] = sc[n * K / 16 + b];
    }
  }
  out.tensors[m] = std::move(packed);
  out.tensors[m + "_weight_scale"] = std::move(scales);
  out.tensors[m + "_weight_scale_2"] = {DType::F32, {}, f32_bytes(s2)};
  if (w4a4) out.tensors[m + "_input_scale"] = {DType::F32, {}, f32_bytes(nvfp4_global_scale(2.5f))};
}

// The good NVFP4 output (ModelOpt format A) of a gpt-oss source whose values are `values`.
inline MemCheckpoint build_bmm_nvfp4(const std::map<std::string, FloatTensor>& values,
                                     bool w4a4 = true, const BmmShape& s = {}) {
  MemCheckpoint out;
  out.w4a4 = w4a4;
  for (const auto& [name, t] : values) {
    if (is_bmm_name(name)) put_bmm_quantized(out, name, t, w4a4);
    else out.tensors[name] = {DType::BF16, t.shape, bf16_bytes(t.data)};
  }
  const std::string algo = w4a4 ? "NVFP4" : "W4A16_NVFP4";
  const nlohmann::json excl = {"lm_head", "model.embed_tokens", "model.layers.0.mlp.router"};
  out.config = gptoss_config(s);
  out.config["quantization_config"] = {{"quant_method", "modelopt"},
                                       {"quant_algo", algo},
                                       {"ignore", excl},
                                       {"producer", {{"name", "fp4kit-test"}, {"version", "0"}}}};
  out.hf_quant = nlohmann::json{{"producer", {{"name", "fp4kit-test"}, {"version", "0"}}},
                                {"quantization", {{"quant_algo", algo},
                                                  {"kv_cache_quant_algo", nullptr},
                                                  {"group_size", 16},
                                                  {"exclude_modules", excl}}}};
  return out;
}

}  // namespace fp4kit::testing
