// FP8 block-scaled sources (DeepSeek-V3 / Kimi-K2 / Qwen3-FP8) end to end. The test writes a tiny
// DeepSeek-V3-style checkpoint with FP8 E4M3 weights and 128x128 "weight_scale_inv" grids straight
// from the format definition (scale = block amax / 448, code = e4m3(w / scale)); the expected
// output is the scalar reference NVFP4 codec applied to the FP8 values decoded by the definition
// (2^(e-7) * (1 + m/8) times the block's scale), not fp4kit's own decoder.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "support/run_command.hpp"
#include "support/temp_dir.hpp"
#include "support/checkpoint_values.hpp"

namespace fp4kit {
namespace {

using testing::amax_of;
using testing::scalar_f32;
using testing::bytes_of;

using testing::quote;
using testing::run_command;
using testing::TempDir;
namespace fs = std::filesystem;

constexpr float kR = 1.0f / 2688.0f;

// E4M3FN from its definition (sign, 4-bit exponent bias 7, 3-bit mantissa; subnormals 2^-6 m/8).
float e4m3_definition(uint8_t code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return static_cast<float>(s ? -mag : mag);
}

// Deterministic pseudo-random values (xorshift), a few large outliers per tensor.
struct Rng {
  uint64_t s;
  float next() {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return static_cast<float>((s >> 11) % 2000001) / 1000000.0f - 1.0f;
  }
};

// One source tensor to write: name, dtype, shape and bytes.
struct Src {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

struct Fp8Tensor {
  std::vector<uint8_t> codes;
  std::vector<float> scale_inv;  // [ceil(n/128), ceil(k/128)]
  std::vector<float> decoded;    // by the definition
};

// FP8 block quantization as DeepSeek's fp8 cast defines it: per 128x128 block, scale = amax/448.
Fp8Tensor fp8_block_quantize(const std::vector<float>& w, uint64_t n, uint64_t k) {
  const uint64_t gr = (n + 127) / 128, gc = (k + 127) / 128;
  Fp8Tensor t;
  t.codes.resize(n * k);
  t.scale_inv.resize(gr * gc);
  t.decoded.resize(n * k);
  for (uint64_t br = 0; br < gr; ++br)
    for (uint64_t bc = 0; bc < gc; ++bc) {
      float amax = 0;
      for (uint64_t r = br * 128; r < std::min(n, br * 128 + 128); ++r)
        for (uint64_t c = bc * 128; c < std::min(k, bc * 128 + 128); ++c)
          amax = std::max(amax, std::fabs(w[r * k + c]));
      const float scale = amax > 0 ? amax / 448.0f : 1.0f;
      t.scale_inv[br * gc + bc] = scale;
      for (uint64_t r = br * 128; r < std::min(n, br * 128 + 128); ++r)
        for (uint64_t c = bc * 128; c < std::min(k, bc * 128 + 128); ++c) {
          t.codes[r * k + c] = float_to_e4m3(w[r * k + c] / scale);
          t.decoded[r * k + c] = e4m3_definition(t.codes[r * k + c]) * scale;
        }
    }
  return t;
}

template <typename T>
std::vector<uint8_t> raw(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint8_t> bf16_bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = float_to_bf16(v[i]);
  return raw(h);
}

// Tiny DeepSeek-V3: hidden 160 and intermediate 288 give partial 128x128 edge blocks.
constexpr uint64_t H = 160, QL = 96, KVL = 64, ROPE = 16, NOPE = 32, VD = 32, HEADS = 2, INTER = 288,
                   MOE_I = 48, E = 4, VOCAB = 64, LAYERS = 2;

class DeepSeekFp8 : public ::testing::Test {
 protected:
  TempDir tmp;
  std::vector<Src> tensors;
  std::map<std::string, Fp8Tensor> fp8;  // weight name -> codes, scales, decoded values
  uint64_t seed = 7;

  void fp8_linear(const std::string& name, uint64_t n, uint64_t k) {
    Rng rng{seed++ * 0x9E3779B97F4A7C15ull};
    std::vector<float> w(n * k);
    for (auto& x : w) x = rng.next() * 0.05f;
    w[(seed * 31) % w.size()] = 0.9f;  // an outlier: block scales then differ a lot
    Fp8Tensor t = fp8_block_quantize(w, n, k);
    tensors.push_back({name, DType::F8_E4M3, {n, k}, t.codes});
    tensors.push_back({name.substr(0, name.size() - 7) + ".weight_scale_inv", DType::F32,
                       {(n + 127) / 128, (k + 127) / 128}, raw(t.scale_inv)});
    fp8[name] = std::move(t);
  }
  void bf16(const std::string& name, std::vector<uint64_t> shape, float scale = 0.1f) {
    uint64_t count = 1;
    for (auto d : shape) count *= d;
    Rng rng{seed++ * 0x2545F4914F6CDD1Dull};
    std::vector<float> v(count);
    for (auto& x : v) x = 1.0f + rng.next() * scale;
    tensors.push_back({name, DType::BF16, std::move(shape), bf16_bytes(v)});
  }

  void build_layer(const std::string& p, bool moe) {
    bf16(p + "input_layernorm.weight", {H});
    bf16(p + "post_attention_layernorm.weight", {H});
    fp8_linear(p + "self_attn.q_a_proj.weight", QL, H);
    bf16(p + "self_attn.q_a_layernorm.weight", {QL});
    fp8_linear(p + "self_attn.q_b_proj.weight", HEADS * (NOPE + ROPE), QL);
    fp8_linear(p + "self_attn.kv_a_proj_with_mqa.weight", KVL + ROPE, H);
    bf16(p + "self_attn.kv_a_layernorm.weight", {KVL});
    fp8_linear(p + "self_attn.kv_b_proj.weight", HEADS * (NOPE + VD), KVL);
    fp8_linear(p + "self_attn.o_proj.weight", H, HEADS * VD);
    if (!moe) {
      fp8_linear(p + "mlp.gate_proj.weight", INTER, H);
      fp8_linear(p + "mlp.up_proj.weight", INTER, H);
      fp8_linear(p + "mlp.down_proj.weight", H, INTER);
      return;
    }
    bf16(p + "mlp.gate.weight", {E, H});
    Rng rng{seed++};
    std::vector<float> bias(E);
    for (auto& x : bias) x = rng.next();
    tensors.push_back({p + "mlp.gate.e_score_correction_bias", DType::F32, {E}, raw(bias)});
    for (uint64_t e = 0; e < E; ++e) {
      const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
      fp8_linear(x + "gate_proj.weight", MOE_I, H);
      fp8_linear(x + "up_proj.weight", MOE_I, H);
      fp8_linear(x + "down_proj.weight", H, MOE_I);
    }
    fp8_linear(p + "mlp.shared_experts.gate_proj.weight", MOE_I, H);
    fp8_linear(p + "mlp.shared_experts.up_proj.weight", MOE_I, H);
    fp8_linear(p + "mlp.shared_experts.down_proj.weight", H, MOE_I);
  }

  // config + tensors; `edit` may change tensors before writing (bad-scale tests).
  fs::path write(const std::function<void(std::vector<Src>&)>& edit = {}) {
    tensors.clear();
    fp8.clear();
    bf16("model.embed_tokens.weight", {VOCAB, H});
    build_layer("model.layers.0.", false);
    build_layer("model.layers.1.", true);
    // MTP layer (index num_hidden_layers) as DeepSeek-V3 stores it: eh_proj plus a full layer.
    bf16("model.layers.2.enorm.weight", {H});
    bf16("model.layers.2.hnorm.weight", {H});
    fp8_linear("model.layers.2.eh_proj.weight", H, 2 * H);
    fp8_linear("model.layers.2.self_attn.o_proj.weight", H, HEADS * VD);
    bf16("model.norm.weight", {H});
    bf16("lm_head.weight", {VOCAB, H});
    if (edit) edit(tensors);

    const fs::path dir = tmp / "src";
    fs::create_directories(dir);
    nlohmann::json cfg = {
        {"architectures", {"DeepseekV3ForCausalLM"}}, {"model_type", "deepseek_v3"},
        {"hidden_size", H}, {"intermediate_size", INTER}, {"moe_intermediate_size", MOE_I},
        {"num_hidden_layers", LAYERS}, {"num_attention_heads", HEADS},
        {"num_key_value_heads", HEADS}, {"q_lora_rank", QL}, {"kv_lora_rank", KVL},
        {"qk_rope_head_dim", ROPE}, {"qk_nope_head_dim", NOPE}, {"v_head_dim", VD},
        {"n_routed_experts", E}, {"n_shared_experts", 1}, {"num_experts_per_tok", 2},
        {"first_k_dense_replace", 1}, {"num_nextn_predict_layers", 1}, {"vocab_size", VOCAB},
        {"torch_dtype", "bfloat16"}, {"tie_word_embeddings", false},
        {"quantization_config",
         {{"activation_scheme", "dynamic"}, {"fmt", "e4m3"}, {"quant_method", "fp8"},
          {"weight_block_size", {128, 128}}}}};
    std::ofstream(dir / "config.json") << cfg.dump(2);
    std::vector<TensorSpec> specs;
    for (const auto& t : tensors) specs.push_back({t.name, t.dtype, t.shape});
    CheckpointWriter w(dir, specs, 1 << 20);  // several shards
    for (const auto& t : tensors) w.write(t.name, t.bytes);
    w.finish();
    return dir;
  }

  std::string quantize(const fs::path& src, const fs::path& out, const std::string& extra = "") {
    return testing::fp4kit_binary() + " quantize " + quote(src.string()) + " " +
           quote(out.string()) + " --weights-only " + extra;
  }
};

TEST_F(DeepSeekFp8, QuantizesFromDecodedFp8) {
  const fs::path src = write(), out = tmp / "out";
  const auto r = run_command(quantize(src, out, "--exclude 'model.layers.0.mlp.down_proj'"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto q = Checkpoint::open(out);

  // Expected bytes: reference codec on the definition-decoded values, s2 from the group's amax.
  auto check = [&](const std::string& m, float s2) {
    const Fp8Tensor& t = fp8.at(m + ".weight");
    const auto& shape = q->info(m + ".weight_scale").shape;
    ASSERT_EQ(shape.size(), 2u) << m;
    const uint64_t n = shape[0], k = shape[1] * 16;
    std::vector<uint8_t> packed(n * k / 2), scales(n * k / 16);
    nvfp4_quantize_ref(t.decoded.data(), DType::F32, n, k, s2, packed.data(), scales.data());
    EXPECT_EQ(scalar_f32(*q, m + ".weight_scale_2"), s2) << m;
    EXPECT_EQ(bytes_of(*q, m + ".weight"), packed) << m;
    EXPECT_EQ(bytes_of(*q, m + ".weight_scale"), scales) << m;
    EXPECT_EQ(q->info(m + ".weight").dtype, DType::U8) << m;
  };
  auto own = [&](const std::string& m) { return amax_of(fp8.at(m + ".weight").decoded) * kR; };
  auto pair = [&](const std::string& a, const std::string& b) {
    return std::max(amax_of(fp8.at(a + ".weight").decoded), amax_of(fp8.at(b + ".weight").decoded)) * kR;
  };

  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    // MLA: q_a_proj and kv_a_proj_with_mqa read the same input -> one s2 (spec 3).
    const float s2 = pair(p + "q_a_proj", p + "kv_a_proj_with_mqa");
    check(p + "q_a_proj", s2);
    check(p + "kv_a_proj_with_mqa", s2);
    EXPECT_EQ(scalar_f32(*q, p + "q_a_proj.weight_scale_2"),
              scalar_f32(*q, p + "kv_a_proj_with_mqa.weight_scale_2"));
    check(p + "q_b_proj", own(p + "q_b_proj"));
    check(p + "kv_b_proj", own(p + "kv_b_proj"));
    check(p + "o_proj", own(p + "o_proj"));
  }
  const std::string d = "model.layers.0.mlp.";
  check(d + "gate_proj", pair(d + "gate_proj", d + "up_proj"));
  check(d + "up_proj", pair(d + "gate_proj", d + "up_proj"));
  const std::string m = "model.layers.1.mlp.";
  for (int e = 0; e < int(E); ++e) {
    const std::string x = m + "experts." + std::to_string(e) + ".";
    check(x + "gate_proj", pair(x + "gate_proj", x + "up_proj"));
    check(x + "up_proj", pair(x + "gate_proj", x + "up_proj"));
    check(x + "down_proj", own(x + "down_proj"));
  }
  check(m + "shared_experts.gate_proj", pair(m + "shared_experts.gate_proj", m + "shared_experts.up_proj"));
  check(m + "shared_experts.down_proj", own(m + "shared_experts.down_proj"));

  // No source scale tensor survives; no FP8 weight either (only NVFP4 block scales are F8).
  for (const auto& name : q->tensor_names()) {
    EXPECT_EQ(name.find("scale_inv"), std::string::npos) << name;
    if (q->info(name).dtype == DType::F8_E4M3)
      EXPECT_TRUE(name.size() > 13 && name.compare(name.size() - 13, 13, ".weight_scale") == 0)
          << name;
  }
  // Router and its score-correction bias kept as they were (bias F32).
  const std::string bias = m + "gate.e_score_correction_bias";
  EXPECT_EQ(q->info(bias).dtype, DType::F32);
  auto s = Checkpoint::open(src);
  EXPECT_EQ(bytes_of(*q, bias), bytes_of(*s, bias));
  EXPECT_EQ(bytes_of(*q, m + "gate.weight"), bytes_of(*s, m + "gate.weight"));
  EXPECT_FALSE(q->has(m + "gate.weight_scale"));

  // FP8 linears that stay unquantized (MTP layer by default, one excluded by --exclude) are
  // written as BF16 of their decoded values, without any scale tensor.
  for (const std::string& k : {std::string("model.layers.2.eh_proj"),
                               std::string("model.layers.2.self_attn.o_proj"),
                               std::string("model.layers.0.mlp.down_proj")}) {
    ASSERT_TRUE(q->has(k + ".weight")) << k;
    EXPECT_EQ(q->info(k + ".weight").dtype, DType::BF16) << k;
    EXPECT_EQ(q->info(k + ".weight").shape, s->info(k + ".weight").shape) << k;
    EXPECT_EQ(bytes_of(*q, k + ".weight"), bf16_bytes(fp8.at(k + ".weight").decoded)) << k;
    EXPECT_FALSE(q->has(k + ".weight_scale")) << k;
    EXPECT_FALSE(q->has(k + ".weight_scale_2")) << k;
  }
  // The MTP norms are copied.
  EXPECT_EQ(bytes_of(*q, "model.layers.2.enorm.weight"), bytes_of(*s, "model.layers.2.enorm.weight"));

  // config.json: the fp8 quantization_config is replaced; exclusions list the kept linears.
  std::ifstream f(out / "config.json");
  const auto cfg = nlohmann::json::parse(f);
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "modelopt");
  EXPECT_FALSE(cfg["quantization_config"].contains("weight_block_size"));
  std::ifstream hf(out / "hf_quant_config.json");
  const auto hq = nlohmann::json::parse(hf);
  const auto& ex = hq["quantization"]["exclude_modules"];
  auto listed = [&](const std::string& n) {
    for (const auto& x : ex)
      if (x == n) return true;
    return false;
  };
  EXPECT_TRUE(listed("model.layers.0.mlp.down_proj")) << ex.dump();
  EXPECT_TRUE(listed("model.layers.2.eh_proj")) << ex.dump();
}

TEST_F(DeepSeekFp8, PlanSaysDequantizedFromFp8) {
  const fs::path src = write();
  const auto r = run_command(quantize(src, tmp / "out", "--dry-run --plan-json " +
                                                            quote((tmp / "plan.json").string())));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream f(tmp / "plan.json");
  const auto plan = nlohmann::json::parse(f);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& e : plan["entries"]) by_name[e["name"]] = e;
  const auto& qa = by_name.at("model.layers.0.self_attn.q_a_proj");
  EXPECT_EQ(qa["action"], "quantize");
  EXPECT_NE(qa["reason"].get<std::string>().find("dequantized from FP8"), std::string::npos);
  EXPECT_EQ(qa["source_scales"], "model.layers.0.self_attn.q_a_proj.weight_scale_inv");
  EXPECT_EQ(by_name.at("model.layers.0.self_attn.q_a_proj.weight_scale_inv")["action"], "drop");
  EXPECT_EQ(by_name.at("model.layers.2.eh_proj.weight")["action"], "dequantize");
  EXPECT_EQ(by_name.at("model.layers.2.eh_proj.weight_scale_inv")["action"], "drop");
  EXPECT_NE(r.output.find("dequantized from FP8"), std::string::npos) << r.output;
}

// Replaces the F32 scale at block 0 of a scale_inv tensor.
std::function<void(std::vector<Src>&)> set_scale(const std::string& tensor, float value) {
  return [tensor, value](std::vector<Src>& ts) {
    for (auto& t : ts)
      if (t.name == tensor) std::memcpy(t.bytes.data(), &value, 4);
  };
}

TEST_F(DeepSeekFp8, BadSourceScalesNameTheTensor) {
  const std::string kv = "model.layers.1.self_attn.kv_b_proj.weight_scale_inv";
  const std::string mtp = "model.layers.2.eh_proj.weight_scale_inv";
  const struct {
    std::string tensor;
    float value;
    const char* what;
  } cases[] = {{kv, std::nanf(""), "NaN"}, {kv, 0.0f, "zero"}, {kv, -2.0f, "negative"},
               {kv, INFINITY, "infinite"}, {mtp, 0.0f, "zero"}};
  for (const auto& c : cases) {
    const fs::path src = write(set_scale(c.tensor, c.value));
    const auto r = run_command(quantize(src, tmp / "out", "--force"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.tensor), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.what), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(tmp / "out" / "config.json"));
    fs::remove_all(src);
  }
}

TEST_F(DeepSeekFp8, MissingOrMisshapedScaleInvIsAPlanError) {
  const std::string w = "model.layers.0.self_attn.o_proj.weight";
  fs::path src = write([&](std::vector<Src>& ts) {
    std::erase_if(ts, [&](const Src& t) { return t.name == w + "_scale_inv"; });
  });
  auto r = run_command(quantize(src, tmp / "out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(w), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("without its block scale tensor"), std::string::npos) << r.output;
  fs::remove_all(src);

  // The dense gate_proj [288, 160] needs a [3, 2] grid; give it [3, 1].
  const std::string g = "model.layers.0.mlp.gate_proj.weight_scale_inv";
  src = write([&](std::vector<Src>& ts) {
    for (auto& t : ts)
      if (t.name == g) {
        t.shape = {3, 1};
        t.bytes.resize(12);
      }
  });
  r = run_command(quantize(src, tmp / "out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(g), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[3,2]"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace fp4kit

namespace fp4kit {
namespace {

// verify --source decodes FP8 block-scaled sources too: fp4kit's output passes with every module
// compared, and a damaged weight is caught against the decoded FP8 values.
TEST_F(DeepSeekFp8, VerifySourceComparesAgainstDecodedFp8) {
  const fs::path src = write(), out = tmp / "out";
  auto r = run_command(quantize(src, out, "--verify full"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string verify = testing::fp4kit_binary() + " verify " + quote(out.string()) +
                             " --source " + quote(src.string());
  r = run_command(verify);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("not compared"), std::string::npos) << r.output;

  // Swap the nibbles of every byte of one FP8-sourced weight: a broken encoding.
  const std::string victim = "model.layers.1.mlp.experts.0.up_proj.weight";
  uint64_t begin = 0, size = 0;
  fs::path file;
  {
    auto q = Checkpoint::open(out);
    begin = q->info(victim).begin;
    size = q->info(victim).nbytes();
    file = q->file_of(victim).path();
  }
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header = 0;
  f.read(reinterpret_cast<char*>(&header), 8);
  std::vector<char> bytes(size);
  f.seekg(static_cast<std::streamoff>(8 + header + begin));
  f.read(bytes.data(), static_cast<std::streamsize>(size));
  for (auto& b : bytes) b = static_cast<char>(((b & 0x0F) << 4) | ((b >> 4) & 0x0F));
  f.seekp(static_cast<std::streamoff>(8 + header + begin));
  f.write(bytes.data(), static_cast<std::streamsize>(size));
  f.close();
  r = run_command(verify);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.experts.0.up_proj"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace fp4kit
