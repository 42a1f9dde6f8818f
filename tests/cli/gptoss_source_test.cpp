// gpt-oss end to end (issue 8, NVFP4-SPEC.md sections 4 and 8): BMM experts from BF16 and from
// MXFP4 sources are written in ModelOpt's 3-D layout. The test writes a tiny gpt-oss checkpoint
// itself; MXFP4 blocks are random E2M1 codes and E8M0 scales, decoded here from the format
// definitions. Expected bytes: the scalar reference codec (nvfp4_quantize_ref) applied to each
// expert's [N, K] matrix with the tensor's one s2, transposed back to [K/2, N] / [K/16, N] by
// index arithmetic in the test, not by fp4kit's transpose.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "support/checkpoint_values.hpp"
#include "support/run_command.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::bytes_of;
using testing::quote;
using testing::run_command;
using testing::scalar_f32;
using testing::TempDir;
namespace fs = std::filesystem;

constexpr uint64_t H = 64, I = 32, E = 4, VOCAB = 64;

// E2M1 from its definition: sign bit 3, exponent bits 2-1 (bias 1), mantissa bit 0;
// exponent 0 is subnormal (0 or 0.5).
float e2m1_definition(uint8_t code) {
  const int s = (code >> 3) & 1, e = (code >> 1) & 3, m = code & 1;
  const float mag = e == 0 ? 0.5f * m : std::ldexp(1.0f + 0.5f * m, e - 1);
  return s ? -mag : mag;
}

struct Rng {
  uint64_t s;
  uint64_t next() { return s ^= s << 13, s ^= s >> 7, s ^= s << 17; }
  float uniform() { return static_cast<float>((next() >> 11) % 2000001) / 1000000.0f - 1.0f; }
};

struct Src {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> bf16_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = float_to_bf16(v[i]);
    std::memcpy(b.data() + 2 * i, &h, 2);
  }
  return b;
}

// One BMM tensor's values per expert as [N, K] float32 (the GEMM's weight, K = input dim).
struct Bmm {
  uint64_t n = 0, k = 0;
  std::vector<std::vector<float>> experts;
};

class GptOss : public ::testing::Test {
 protected:
  TempDir tmp;
  std::vector<Src> tensors;
  std::map<std::string, Bmm> bmm;  // "<m>" -> values by expert
  uint64_t seed = 11;

  void bf16(const std::string& name, std::vector<uint64_t> shape, float scale = 0.05f) {
    uint64_t count = 1;
    for (auto d : shape) count *= d;
    Rng rng{seed++ * 0x9E3779B97F4A7C15ull};
    std::vector<float> v(count);
    for (auto& x : v) x = rng.uniform() * scale;
    tensors.push_back({name, DType::BF16, std::move(shape), bf16_bytes(v)});
  }

  // BF16 BMM tensor [E, K, N] as transformers saves it; records each expert's [N, K] values.
  void bf16_bmm(const std::string& m, uint64_t k, uint64_t n) {
    Rng rng{seed++ * 0x2545F4914F6CDD1Dull};
    std::vector<float> disk(E * k * n);
    for (auto& x : disk) x = bf16_to_float(float_to_bf16(rng.uniform() * (0.02f + 0.01f * seed)));
    disk[(seed * 97) % disk.size()] = 0.75f;  // an outlier sets the one s2
    Bmm b{n, k, {}};
    for (uint64_t e = 0; e < E; ++e) {
      std::vector<float> w(n * k);
      for (uint64_t r = 0; r < n; ++r)
        for (uint64_t c = 0; c < k; ++c) w[r * k + c] = disk[(e * k + c) * n + r];
      b.experts.push_back(std::move(w));
    }
    bmm[m] = std::move(b);
    tensors.push_back({m, DType::BF16, {E, k, n}, bf16_bytes(disk)});
  }

  // MXFP4 "<m>_blocks" [E, N, K/32, 16] + "<m>_scales" [E, N, K/32]: random codes, scales
  // 2^(s-127) with s in [119, 126]; values by the definition.
  void mxfp4_bmm(const std::string& m, uint64_t k, uint64_t n) {
    Rng rng{seed++ * 0xD1B54A32D192ED03ull};
    const uint64_t g = k / 32;
    std::vector<uint8_t> blocks(E * n * g * 16), scales(E * n * g);
    Bmm b{n, k, {}};
    for (uint64_t e = 0; e < E; ++e) {
      std::vector<float> w(n * k);
      for (uint64_t r = 0; r < n; ++r)
        for (uint64_t j = 0; j < g; ++j) {
          const uint64_t gi = (e * n + r) * g + j;
          scales[gi] = static_cast<uint8_t>(119 + rng.next() % 8);
          const float sc = std::ldexp(1.0f, static_cast<int>(scales[gi]) - 127);
          for (uint64_t p = 0; p < 16; ++p) {
            const uint8_t lo = rng.next() & 15, hi = rng.next() & 15;
            blocks[gi * 16 + p] = static_cast<uint8_t>(lo | (hi << 4));
            w[r * k + j * 32 + 2 * p] = e2m1_definition(lo) * sc;      // low nibble: even
            w[r * k + j * 32 + 2 * p + 1] = e2m1_definition(hi) * sc;  // high nibble: odd
          }
        }
      b.experts.push_back(std::move(w));
    }
    bmm[m] = std::move(b);
    tensors.push_back({m + "_blocks", DType::U8, {E, n, g, 16}, blocks});
    tensors.push_back({m + "_scales", DType::U8, {E, n, g}, scales});
  }

  fs::path write(bool mxfp4, const std::function<void(std::vector<Src>&)>& edit = {}) {
    tensors.clear();
    bmm.clear();
    bf16("model.embed_tokens.weight", {VOCAB, H});
    const std::string p = "model.layers.0.";
    bf16(p + "input_layernorm.weight", {H});
    bf16(p + "post_attention_layernorm.weight", {H});
    for (const char* x : {"q_proj", "o_proj"}) {
      bf16(p + "self_attn." + x + ".weight", {H, H});
      bf16(p + "self_attn." + x + ".bias", {H});
    }
    for (const char* x : {"k_proj", "v_proj"}) {
      bf16(p + "self_attn." + x + ".weight", {32, H});
      bf16(p + "self_attn." + x + ".bias", {32});
    }
    bf16(p + "self_attn.sinks", {4});
    bf16(p + "mlp.router.weight", {E, H});
    bf16(p + "mlp.router.bias", {E});
    const std::string x = p + "mlp.experts.";
    if (mxfp4) {
      mxfp4_bmm(x + "gate_up_proj", H, 2 * I);
      mxfp4_bmm(x + "down_proj", I, H);
    } else {
      bf16_bmm(x + "gate_up_proj", H, 2 * I);
      bf16_bmm(x + "down_proj", I, H);
    }
    bf16(x + "gate_up_proj_bias", {E, 2 * I});
    bf16(x + "down_proj_bias", {E, H});
    bf16("model.norm.weight", {H});
    bf16("lm_head.weight", {VOCAB, H});
    if (edit) edit(tensors);

    const fs::path dir = tmp / (mxfp4 ? "src-mxfp4" : "src-bf16");
    fs::create_directories(dir);
    nlohmann::json cfg = {{"architectures", {"GptOssForCausalLM"}}, {"model_type", "gpt_oss"},
                          {"hidden_size", H}, {"intermediate_size", I},
                          {"num_hidden_layers", 1}, {"num_attention_heads", 4},
                          {"num_key_value_heads", 2}, {"head_dim", 16},
                          {"num_local_experts", E}, {"experts_per_token", 2},
                          {"vocab_size", VOCAB}, {"tie_word_embeddings", false}};
    if (mxfp4)
      cfg["quantization_config"] = {
          {"quant_method", "mxfp4"},
          {"modules_to_not_convert",
           {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
            "lm_head"}}};
    std::ofstream(dir / "config.json") << cfg.dump(2);
    std::vector<TensorSpec> specs;
    for (const auto& t : tensors) specs.push_back({t.name, t.dtype, t.shape});
    CheckpointWriter w(dir, specs, 1 << 20);
    for (const auto& t : tensors) w.write(t.name, t.bytes);
    w.finish();
    return dir;
  }

  static std::string quantize(const fs::path& src, const fs::path& out,
                              const std::string& extra = "") {
    return testing::fp4kit_binary() + " quantize " + quote(src.string()) + " " +
           quote(out.string()) + " --weights-only " + extra;
  }

  // ModelOpt's layout, byte for byte against the reference codec per expert.
  void expect_bmm_output(const Checkpoint& q, const std::string& m) {
    const Bmm& b = bmm.at(m);
    float amax = 0;
    for (const auto& w : b.experts) amax = std::max(amax, testing::amax_of(w));
    const float s2 = nvfp4_global_scale(amax);
    EXPECT_EQ(scalar_f32(q, m + "_weight_scale_2"), s2) << m << ": one s2 from all experts";
    EXPECT_TRUE(q.info(m + "_weight_scale_2").shape.empty()) << m;
    ASSERT_EQ(q.info(m).dtype, DType::U8) << m;
    ASSERT_EQ(q.info(m).shape, (std::vector<uint64_t>{E, b.k / 2, b.n})) << m;
    ASSERT_EQ(q.info(m + "_weight_scale").dtype, DType::F8_E4M3) << m;
    ASSERT_EQ(q.info(m + "_weight_scale").shape, (std::vector<uint64_t>{E, b.k / 16, b.n})) << m;
    const auto packed = bytes_of(q, m), scales = bytes_of(q, m + "_weight_scale");
    std::vector<uint8_t> rp(b.n * b.k / 2), rs(b.n * b.k / 16);
    for (uint64_t e = 0; e < E; ++e) {
      nvfp4_quantize_ref(b.experts[e].data(), DType::F32, b.n, b.k, s2, rp.data(), rs.data());
      uint64_t bad = 0;
      for (uint64_t r = 0; r < b.n; ++r) {
        for (uint64_t j = 0; j < b.k / 2; ++j)
          bad += packed[(e * (b.k / 2) + j) * b.n + r] != rp[r * (b.k / 2) + j];
        for (uint64_t j = 0; j < b.k / 16; ++j)
          bad += scales[(e * (b.k / 16) + j) * b.n + r] != rs[r * (b.k / 16) + j];
      }
      EXPECT_EQ(bad, 0u) << m << " expert " << e << ": bytes differ from the reference";
    }
  }
};

TEST_F(GptOss, Bf16BmmExpertsAreWrittenInModelOptsLayout) {
  const fs::path src = write(false), out = tmp / "out";
  const auto r = run_command(quantize(src, out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto qp = Checkpoint::open(out);
  const Checkpoint& q = *qp;
  auto sp = Checkpoint::open(src);
  const Checkpoint& s = *sp;
  expect_bmm_output(q, "model.layers.0.mlp.experts.gate_up_proj");
  expect_bmm_output(q, "model.layers.0.mlp.experts.down_proj");
  for (const auto& name : q.tensor_names())
    EXPECT_EQ(name.find("experts.0."), std::string::npos) << "no per-expert keys: " << name;
  for (const char* kept : {"model.layers.0.mlp.experts.gate_up_proj_bias",
                           "model.layers.0.mlp.experts.down_proj_bias",
                           "model.layers.0.mlp.router.weight", "model.layers.0.mlp.router.bias",
                           "model.layers.0.self_attn.sinks"})
    EXPECT_EQ(bytes_of(q, kept), bytes_of(s, kept)) << kept;
  EXPECT_EQ(q.info("model.layers.0.self_attn.q_proj.weight").dtype, DType::U8);
  const auto hq = nlohmann::json::parse(std::ifstream(out / "hf_quant_config.json"));
  EXPECT_EQ(hq["quantization"]["quant_algo"], "W4A16_NVFP4");
  EXPECT_EQ(hq["quantization"]["exclude_modules"],
            nlohmann::json({"lm_head", "model.embed_tokens", "model.layers.0.mlp.router"}));
  // verify --source compares the 3-D tensors against the BF16 source and passes.
  const auto v = run_command(testing::fp4kit_binary() + " verify " + quote(out.string()) +
                             " --source " + quote(src.string()));
  EXPECT_EQ(v.exit_code, 0) << v.output;
}

TEST_F(GptOss, Mxfp4ExpertsAreDecodedAndQuantized) {
  const fs::path src = write(true), out = tmp / "out";
  const auto r = run_command(quantize(src, out, "--dry-run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("dequantized from MXFP4"), std::string::npos) << r.output;
  const auto r2 = run_command(quantize(src, out));
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  auto qp = Checkpoint::open(out);
  const Checkpoint& q = *qp;
  expect_bmm_output(q, "model.layers.0.mlp.experts.gate_up_proj");
  expect_bmm_output(q, "model.layers.0.mlp.experts.down_proj");
  for (const auto& name : q.tensor_names()) {
    EXPECT_FALSE(name.ends_with("_blocks")) << name;
    EXPECT_FALSE(name.ends_with("_scales")) << name;
  }
  // The source's MXFP4 quantization_config is replaced, not merged.
  const auto cfg = nlohmann::json::parse(std::ifstream(out / "config.json"));
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "modelopt");
}

TEST_F(GptOss, KeptMxfp4ExpertsAreWrittenAsBf16InTheBmmOrientation) {
  const fs::path src = write(true), out = tmp / "out";
  const auto r = run_command(quantize(src, out, "--exclude '*.mlp.experts.*'"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto qp = Checkpoint::open(out);
  const Checkpoint& q = *qp;
  const std::string m = "model.layers.0.mlp.experts.gate_up_proj";
  ASSERT_EQ(q.info(m).dtype, DType::BF16);
  ASSERT_EQ(q.info(m).shape, (std::vector<uint64_t>{E, H, 2 * I}));  // [E, K, N]
  const auto v = testing::decode(q, m);
  const Bmm& b = bmm.at(m);
  uint64_t bad = 0;
  for (uint64_t e = 0; e < E; ++e)
    for (uint64_t r = 0; r < b.n; ++r)
      for (uint64_t c = 0; c < b.k; ++c)
        bad += v[(e * b.k + c) * b.n + r] != b.experts[e][r * b.k + c];
  EXPECT_EQ(bad, 0u) << "E2M1 x 2^k values are exact in BF16";
  EXPECT_FALSE(q.has(m + "_weight_scale"));
  const auto hq = nlohmann::json::parse(std::ifstream(out / "hf_quant_config.json"));
  const auto& ex = hq["quantization"]["exclude_modules"];
  EXPECT_NE(std::find(ex.begin(), ex.end(), m), ex.end()) << ex.dump();
}

TEST_F(GptOss, NanMxfp4ScaleIsAnErrorNamingTheTensorAndLeavesNoOutput) {
  const std::string scales = "model.layers.0.mlp.experts.down_proj_scales";
  const fs::path src = write(true, [&](std::vector<Src>& t) {
    for (auto& x : t)
      if (x.name == scales) x.bytes[5] = 0xFF;
  });
  const fs::path out = tmp / "out";
  const auto r = run_command(quantize(src, out));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(scales), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("NaN scale 0xFF"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out)) << "no half-written output under the final name";
}

TEST_F(GptOss, CompressedTensorsFormatIsRefusedForBmmExperts) {
  const fs::path src = write(false), out = tmp / "out";
  const auto r = run_command(quantize(src, out, "--format compressed-tensors"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("model.layers.0.mlp.experts.down_proj' is a 3-D BMM expert tensor"),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--format modelopt"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace fp4kit
