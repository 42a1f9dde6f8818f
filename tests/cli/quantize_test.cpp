// End-to-end `fp4kit quantize` on synthetic checkpoints with real tensor names: the expected
// outputs are derived from the spec (names, shapes, shared s2 per fusion group, bytes from the
// scalar reference codec), not copied from fp4kit's output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_search.hpp"
#include "support/run_command.hpp"
#include "support/small_moe_spec.hpp"
#include "support/temp_dir.hpp"
#include "support/checkpoint_values.hpp"

namespace fp4kit {
namespace {

using testing::decode;
using testing::amax_of;
using testing::scalar_f32;
using testing::bytes_of;

using testing::quote;
using testing::run_command;
using testing::TempDir;
namespace fs = std::filesystem;

// Reference: quantize `values` [rows, cols] with s2 using the scalar reference codec.
std::pair<std::vector<uint8_t>, std::vector<uint8_t>> reference(const std::vector<float>& values,
                                                                uint64_t rows, uint64_t cols,
                                                                float s2) {
  std::vector<uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
  nvfp4_quantize_ref(values.data(), DType::F32, rows, cols, s2, packed.data(), scales.data());
  return {packed, scales};
}

std::string quantize_cmd(const fs::path& src, const fs::path& out, const std::string& extra) {
  return testing::fp4kit_binary() + " quantize " + quote(src.string()) + " " +
         quote(out.string()) + " " + extra;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

class QuantizeE2E : public ::testing::Test {
 protected:
  TempDir tmp;
  SyntheticMoeSpec spec = testing::small_moe_spec();
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// The write path's environment switches (io/write_tuning.hpp) change speed, never bytes; a
// malformed one is refused before anything is written; FP4KIT_TIMINGS=1 prints the phases in
// the order they happen (the shards are fsynced before the commit).
TEST_F(QuantizeE2E, WriteSwitchesKeepTheBytesAndTimingsListThePhases) {
  const fs::path src = tmp / "src", a = tmp / "a", b = tmp / "b", c = tmp / "c";
  write_synthetic_moe(src, spec);
  const auto ra = run_command(quantize_cmd(src, a, "--weights-only"));
  ASSERT_EQ(ra.exit_code, 0) << ra.output;
  EXPECT_EQ(ra.output.find("timing:"), std::string::npos) << ra.output;
  const auto rb = run_command("FP4KIT_TIMINGS=1 FP4KIT_WRITERS=1 FP4KIT_KEPT_PIECE_MIB=1 "
                              "FP4KIT_WB_WINDOW_MIB=1 FP4KIT_WB_LAG_MIB=2 " +
                              quantize_cmd(src, b, "--weights-only"));
  ASSERT_EQ(rb.exit_code, 0) << rb.output;
  EXPECT_EQ(slurp(a / "model.safetensors"), slurp(b / "model.safetensors"));
  size_t at = 0;
  for (const char* phase : {"quantize starts", "stream starts", "writer drained", "verify done",
                            "shards fsynced", "committed", "total"}) {
    const size_t p = rb.output.find(phase, at);
    ASSERT_NE(p, std::string::npos) << phase << " (in order) in:\n" << rb.output;
    at = p;
  }
  const auto rc = run_command("FP4KIT_WRITERS=0 " + quantize_cmd(src, c, "--weights-only"));
  EXPECT_EQ(rc.exit_code, 1) << rc.output;
  EXPECT_NE(rc.output.find("FP4KIT_WRITERS='0'"), std::string::npos) << rc.output;
  EXPECT_FALSE(fs::exists(c));
  EXPECT_FALSE(fs::exists(tmp / "c.partial"));
}

TEST_F(QuantizeE2E, Qwen3MoeWeightsOnlyModelOpt) {
  const fs::path src = tmp / "src", out = tmp / "out";
  write_synthetic_moe(src, spec);
  const auto r = run_command(quantize_cmd(src, out, "--weights-only"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto s = Checkpoint::open(src);
  auto q = Checkpoint::open(out);

  for (int l = 0; l < spec.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    // Every routed expert's gate/up pair shares s2 = R * max(amax(gate), amax(up)); experts differ.
    std::vector<float> expert_s2;
    for (int e = 0; e < spec.experts; ++e) {
      const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
      const auto gate = decode(*s, x + "gate_proj.weight");
      const auto up = decode(*s, x + "up_proj.weight");
      const float s2 = std::max(amax_of(gate), amax_of(up)) * (1.0f / 2688.0f);
      EXPECT_EQ(scalar_f32(*q, x + "gate_proj.weight_scale_2"), s2) << x;
      EXPECT_EQ(scalar_f32(*q, x + "up_proj.weight_scale_2"), s2) << x;
      expert_s2.push_back(s2);
      const auto [gp, gs] = reference(gate, spec.moe_intermediate, spec.hidden, s2);
      EXPECT_EQ(bytes_of(*q, x + "gate_proj.weight"), gp) << x;
      EXPECT_EQ(bytes_of(*q, x + "gate_proj.weight_scale"), gs) << x;
      EXPECT_EQ(q->info(x + "gate_proj.weight").dtype, DType::U8);
      EXPECT_EQ(q->info(x + "gate_proj.weight_scale").dtype, DType::F8_E4M3);
      EXPECT_EQ(q->info(x + "gate_proj.weight_scale").shape,
                (std::vector<uint64_t>{uint64_t(spec.moe_intermediate), uint64_t(spec.hidden / 16)}));
      EXPECT_TRUE(q->info(x + "gate_proj.weight_scale_2").shape.empty());
      // down_proj alone: its own amax.
      const auto down = decode(*s, x + "down_proj.weight");
      EXPECT_EQ(scalar_f32(*q, x + "down_proj.weight_scale_2"), amax_of(down) * (1.0f / 2688.0f));
      EXPECT_FALSE(q->has(x + "gate_proj.input_scale")) << "weights-only has no input_scale";
    }
    EXPECT_NE(expert_s2[0], expert_s2[3]) << "experts must not share s2 with each other";
    // q/k/v share s2; o_proj does not join them.
    const float qs = scalar_f32(*q, p + "self_attn.q_proj.weight_scale_2");
    EXPECT_EQ(scalar_f32(*q, p + "self_attn.k_proj.weight_scale_2"), qs);
    EXPECT_EQ(scalar_f32(*q, p + "self_attn.v_proj.weight_scale_2"), qs);
    const float qkv_amax = std::max({amax_of(decode(*s, p + "self_attn.q_proj.weight")),
                                     amax_of(decode(*s, p + "self_attn.k_proj.weight")),
                                     amax_of(decode(*s, p + "self_attn.v_proj.weight"))});
    EXPECT_EQ(qs, qkv_amax * (1.0f / 2688.0f));
    // Router and norms kept byte for byte, with no scale tensors.
    EXPECT_EQ(bytes_of(*q, p + "mlp.gate.weight"), bytes_of(*s, p + "mlp.gate.weight"));
    EXPECT_EQ(q->info(p + "mlp.gate.weight").dtype, DType::BF16);
    EXPECT_FALSE(q->has(p + "mlp.gate.weight_scale"));
    EXPECT_EQ(bytes_of(*q, p + "input_layernorm.weight"), bytes_of(*s, p + "input_layernorm.weight"));
  }
  EXPECT_EQ(bytes_of(*q, "lm_head.weight"), bytes_of(*s, "lm_head.weight"));
  EXPECT_FALSE(q->has("lm_head.weight_scale"));
  EXPECT_EQ(bytes_of(*q, "model.embed_tokens.weight"), bytes_of(*s, "model.embed_tokens.weight"));

  const auto cfg = read_json(out / "config.json");
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "modelopt");
  EXPECT_EQ(cfg["quantization_config"]["quant_algo"], "W4A16_NVFP4");
  EXPECT_EQ(cfg["model_type"], "qwen3_moe");  // the source config is kept
  const auto hf = read_json(out / "hf_quant_config.json");
  const auto excl = hf["quantization"]["exclude_modules"];
  auto has = [&](const std::string& m) {
    return std::find(excl.begin(), excl.end(), m) != excl.end();
  };
  EXPECT_TRUE(has("lm_head"));
  EXPECT_TRUE(has("model.layers.0.mlp.gate"));
  EXPECT_TRUE(has("model.layers.1.mlp.gate"));
  EXPECT_EQ(hf["quantization"]["exclude_modules"], cfg["quantization_config"]["ignore"]);
  EXPECT_TRUE(fs::exists(out / "generation_config.json")) << "sidecars are copied";
  EXPECT_FALSE(fs::exists(tmp / "out.partial"));
}

TEST_F(QuantizeE2E, FusedExpertsAreSplitPerExpert) {
  spec.fused_experts = true;
  const fs::path src = tmp / "src", out = tmp / "out";
  write_synthetic_moe(src, spec);
  const auto r = run_command(quantize_cmd(src, out, "--weights-only"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto s = Checkpoint::open(src);
  auto q = Checkpoint::open(out);
  const uint64_t I = spec.moe_intermediate, H = spec.hidden;
  for (const auto& name : q->tensor_names())
    EXPECT_EQ(name.find("gate_up_proj"), std::string::npos) << "fused key in output: " << name;
  const auto gate_up = decode(*s, "model.layers.1.mlp.experts.gate_up_proj");  // [E, 2I, H]
  const auto down = decode(*s, "model.layers.1.mlp.experts.down_proj");        // [E, H, I]
  for (int e = 0; e < spec.experts; ++e) {
    const std::string x = "model.layers.1.mlp.experts." + std::to_string(e) + ".";
    std::vector<float> g(gate_up.begin() + e * 2 * I * H, gate_up.begin() + (e * 2 * I + I) * H);
    std::vector<float> u(gate_up.begin() + (e * 2 * I + I) * H,
                         gate_up.begin() + (e + 1) * 2 * I * H);
    std::vector<float> d(down.begin() + e * H * I, down.begin() + (e + 1) * H * I);
    const float s2 = std::max(amax_of(g), amax_of(u)) * (1.0f / 2688.0f);
    ASSERT_EQ(scalar_f32(*q, x + "gate_proj.weight_scale_2"), s2);
    ASSERT_EQ(scalar_f32(*q, x + "up_proj.weight_scale_2"), s2);
    EXPECT_EQ(bytes_of(*q, x + "gate_proj.weight"), reference(g, I, H, s2).first) << x;
    EXPECT_EQ(bytes_of(*q, x + "up_proj.weight"), reference(u, I, H, s2).first) << x;
    const float sd = amax_of(d) * (1.0f / 2688.0f);
    EXPECT_EQ(bytes_of(*q, x + "down_proj.weight"), reference(d, H, I, sd).first) << x;
    EXPECT_EQ(q->info(x + "down_proj.weight").shape, (std::vector<uint64_t>{H, I / 2}));
  }
}

TEST_F(QuantizeE2E, CompressedTensorsNamesAndReciprocalGlobals) {
  const fs::path src = tmp / "src", a = tmp / "a", b = tmp / "b";
  write_synthetic_moe(src, spec);
  ASSERT_EQ(run_command(quantize_cmd(src, a, "--weights-only")).exit_code, 0);
  const auto r = run_command(quantize_cmd(src, b, "--weights-only --format compressed-tensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto qa = Checkpoint::open(a);
  auto qb = Checkpoint::open(b);
  const std::string m = "model.layers.0.mlp.experts.2.up_proj";
  EXPECT_EQ(bytes_of(*qb, m + ".weight_packed"), bytes_of(*qa, m + ".weight"));
  EXPECT_EQ(bytes_of(*qb, m + ".weight_scale"), bytes_of(*qa, m + ".weight_scale"));
  EXPECT_EQ(qb->info(m + ".weight_global_scale").shape, std::vector<uint64_t>{1});
  EXPECT_EQ(scalar_f32(*qb, m + ".weight_global_scale"),
            1.0f / scalar_f32(*qa, m + ".weight_scale_2"));
  EXPECT_FALSE(qb->has(m + ".weight"));
  const auto cfg = read_json(b / "config.json");
  EXPECT_EQ(cfg["quantization_config"]["format"], "nvfp4-pack-quantized");
  EXPECT_TRUE(cfg["quantization_config"]["config_groups"]["group_0"]["input_activations"].is_null());
  EXPECT_FALSE(fs::exists(b / "hf_quant_config.json"));
}

TEST_F(QuantizeE2E, W4A4WithHandWrittenStats) {
  const fs::path src = tmp / "src", out = tmp / "out", stats_path = tmp / "stats.safetensors";
  write_synthetic_moe(src, spec);
  ActivationStats st;
  st.metadata = {{"format", "fp4kit-stats"}, {"version", "1"}};
  for (int l = 0; l < spec.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"})
      st.input_amax[p + "self_attn." + m] = (std::string(m) == "o_proj") ? 2.0f : 10.0f + l;
    for (int e = 0; e < spec.experts; ++e) {
      const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
      if (e == 3) continue;  // expert 3 saw no token: it still gets the layer's value
      st.input_amax[x + "gate_proj"] = 4.0f + e;
      st.input_amax[x + "up_proj"] = 4.0f + e;
      st.input_amax[x + "down_proj"] = 1.0f + e;
    }
  }
  write_stats_file(stats_path, st);
  const auto r = run_command(quantize_cmd(src, out, "--stats " + quote(stats_path.string())));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto q = Checkpoint::open(out);
  const float R = 1.0f / 2688.0f;
  for (int l = 0; l < spec.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    EXPECT_EQ(scalar_f32(*q, p + "self_attn.k_proj.input_scale"), (10.0f + l) * R);
    EXPECT_EQ(scalar_f32(*q, p + "self_attn.o_proj.input_scale"), 2.0f * R);
    for (int e = 0; e < spec.experts; ++e) {
      const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
      EXPECT_EQ(scalar_f32(*q, x + "gate_proj.input_scale"), 6.0f * R) << x;  // max over experts
      EXPECT_EQ(scalar_f32(*q, x + "up_proj.input_scale"), 6.0f * R) << x;
      EXPECT_EQ(scalar_f32(*q, x + "down_proj.input_scale"), 3.0f * R) << x;
    }
    EXPECT_FALSE(q->has(p + "mlp.gate.input_scale"));
  }
  EXPECT_FALSE(q->has("lm_head.input_scale"));
  EXPECT_EQ(read_json(out / "config.json")["quantization_config"]["quant_algo"], "NVFP4");
}

TEST_F(QuantizeE2E, W4A4WithoutStatsSaysHowToCalibrate) {
  const fs::path src = tmp / "src", out = tmp / "out";
  write_synthetic_moe(src, spec);
  const auto r = run_command(quantize_cmd(src, out, ""));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("fp4kit calibrate"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(QuantizeE2E, DryRunWritesNothing) {
  const fs::path src = tmp / "src", out = tmp / "out";
  write_synthetic_moe(src, spec);
  const auto r = run_command(quantize_cmd(src, out, "--weights-only --dry-run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.experts.3.down_proj"), std::string::npos);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(tmp / "out.partial"));
}

TEST_F(QuantizeE2E, SameBytesWhateverTheThreadCount) {
  const fs::path src = tmp / "src", a = tmp / "a", b = tmp / "b";
  write_synthetic_moe(src, spec);
  ASSERT_EQ(run_command(quantize_cmd(src, a, "--weights-only --threads 1")).exit_code, 0);
  ASSERT_EQ(run_command(quantize_cmd(src, b, "--weights-only --threads 2")).exit_code, 0);
  auto qa = Checkpoint::open(a);
  auto qb = Checkpoint::open(b);
  ASSERT_EQ(qa->tensor_names(), qb->tensor_names());
  for (const auto& n : qa->tensor_names()) EXPECT_EQ(bytes_of(*qa, n), bytes_of(*qb, n)) << n;
}

// --scales mse with --global-norm 256: every routed expert's gate/up pair still shares one s2, now
// max(amax) / 1536, and each tensor's bytes are the scalar reference search's (every E4M3 code
// tried per block) under that s2; the report names the method per tensor.
TEST_F(QuantizeE2E, MseScalesWithHeadroomKeepSharedGlobalScales) {
  const fs::path src = tmp / "src", out = tmp / "out";
  write_synthetic_moe(src, spec);
  const auto r = run_command(quantize_cmd(
      src, out, "--weights-only --scales mse --global-norm 256 --report " +
                    quote((tmp / "r.json").string())));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto s = Checkpoint::open(src);
  auto q = Checkpoint::open(out);
  size_t moved = 0, blocks = 0;
  for (int e = 0; e < spec.experts; ++e) {
    const std::string x = "model.layers.1.mlp.experts." + std::to_string(e) + ".";
    const auto gate = decode(*s, x + "gate_proj.weight");
    const auto up = decode(*s, x + "up_proj.weight");
    const float s2 = std::max(amax_of(gate), amax_of(up)) * (1.0f / 1536.0f);
    EXPECT_EQ(scalar_f32(*q, x + "gate_proj.weight_scale_2"), s2) << x;
    EXPECT_EQ(scalar_f32(*q, x + "up_proj.weight_scale_2"), s2) << x;
    for (const auto& [name, values] : {std::pair{"gate_proj", gate}, std::pair{"up_proj", up}}) {
      std::vector<uint8_t> packed(values.size() / 2), scales(values.size() / 16), mp(packed), ms(scales);
      nvfp4_quantize_search_ref(values.data(), DType::F32, spec.moe_intermediate, spec.hidden, s2,
                                {}, packed.data(), scales.data());
      EXPECT_EQ(bytes_of(*q, x + name + ".weight"), packed) << x << name;
      EXPECT_EQ(bytes_of(*q, x + name + ".weight_scale"), scales) << x << name;
      nvfp4_quantize_ref(values.data(), DType::F32, spec.moe_intermediate, spec.hidden, s2,
                         mp.data(), ms.data());
      for (size_t b = 0; b < scales.size(); ++b) moved += scales[b] != ms[b];
      blocks += scales.size();
    }
  }
  EXPECT_GT(moved, blocks / 10) << "the search should move some block scales";
  const auto rep = read_json(tmp / "r.json");
  for (const auto& t : rep["tensors"])
    if (t["action"] == "quantize") EXPECT_EQ(t["block_scales"], "mse") << t["name"];
  EXPECT_EQ(rep["summary"]["block_scales"]["mse"], rep["summary"]["quantized"]);
}

TEST_F(QuantizeE2E, ExplicitMaxScalesAreTheDefaultBytes) {
  const fs::path src = tmp / "src", a = tmp / "a", b = tmp / "b";
  write_synthetic_moe(src, spec);
  ASSERT_EQ(run_command(quantize_cmd(src, a, "--weights-only")).exit_code, 0);
  ASSERT_EQ(run_command(quantize_cmd(src, b, "--weights-only --scales max --global-norm 448")).exit_code, 0);
  auto qa = Checkpoint::open(a);
  auto qb = Checkpoint::open(b);
  for (const auto& n : qa->tensor_names()) EXPECT_EQ(bytes_of(*qa, n), bytes_of(*qb, n)) << n;
}

TEST_F(QuantizeE2E, HessianScalesNeedHessianStats) {
  const fs::path src = tmp / "src";
  write_synthetic_moe(src, spec);
  auto r = run_command(quantize_cmd(src, tmp / "o", "--weights-only --scales hessian"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--hessian"), std::string::npos) << r.output;
  ActivationStats st;  // statistics without Hessian blocks
  st.input_amax["model.layers.0.self_attn.q_proj"] = 1.0f;
  write_stats_file(tmp / "s.safetensors", st);
  r = run_command(quantize_cmd(src, tmp / "o", "--weights-only --scales hessian --stats " +
                                                  quote((tmp / "s.safetensors").string())));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no Hessian blocks"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(tmp / "o"));
  r = run_command(quantize_cmd(src, tmp / "o", "--weights-only --global-norm 300"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
}  // namespace fp4kit
