// The broken-checkpoint corpus of issue 5: a good NVFP4 checkpoint built here from a synthetic
// Qwen3-MoE source must pass; each variant breaks exactly one rule of NVFP4-SPEC.md section 9 and
// must be caught by the right check, naming the right module.
#include <gtest/gtest.h>

#include <random>

#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/verify/verify.hpp"
#include "verify/verify_helpers.hpp"

namespace fp4kit::testing {
namespace {

using verify::Finding;

const std::map<std::string, FloatTensor>& source() {
  static const auto s = make_moe_source();
  return s;
}

MemCheckpoint good(Format f = Format::ModelOpt, bool w4a4 = true) {
  BuildOptions o;
  o.format = f;
  o.w4a4 = w4a4;
  return build_nvfp4(source(), o);
}

const std::string kExpert = "model.layers.1.mlp.experts.2";

TEST(VerifyGood, ModelOptW4A4Passes) {
  const auto r = verify_mem(good());
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_EQ(r.count(Finding::Warning), 0u) << dump_findings(r);
  EXPECT_EQ(r.format, "modelopt");
  EXPECT_EQ(r.quant_algo, "NVFP4");
  EXPECT_FALSE(r.weights_only);
  // 2 layers x (q, k, v, o + 4 experts x 3) = 32 quantized modules; per layer one q/k/v group
  // and 4 expert gate/up groups.
  EXPECT_EQ(r.modules_quantized, 32u);
  EXPECT_EQ(r.fusion_groups, 10u);
  // Linear parameters: per layer q 64x64, k/v 32x64, o 64x64, 12 expert mats of 32x64,
  // router 4x64; lm_head 128x64. NVFP4 share = quantized / all linear.
  const uint64_t per_layer_q = 64 * 64 + 2 * 32 * 64 + 64 * 64 + 12 * 32 * 64;
  EXPECT_EQ(r.quantized_params, 2 * per_layer_q);
  EXPECT_EQ(r.linear_params, 2 * per_layer_q + 2 * 4 * 64 + 128 * 64);
  EXPECT_EQ(r.expected_bytes, r.actual_bytes);
  // o_proj K = 64 and down_proj K = 32 are row-parallel: K/tp % 16 holds for tp 1 and 2 only.
  EXPECT_EQ(r.supported_tp, (std::vector<int>{1, 2}));
  EXPECT_FINDING(r, Info, "tp.shard", "down_proj");
}

TEST(VerifyGood, ModelOptWeightOnlyPasses) {
  const auto r = verify_mem(good(Format::ModelOpt, false));
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_EQ(r.count(Finding::Warning), 0u) << dump_findings(r);
  EXPECT_EQ(r.quant_algo, "W4A16_NVFP4");
  EXPECT_TRUE(r.weights_only);
}

TEST(VerifyGood, CompressedTensorsPasses) {
  for (bool w4a4 : {true, false}) {
    const auto r = verify_mem(good(Format::CompressedTensors, w4a4));
    EXPECT_TRUE(r.ok()) << dump_findings(r);
    EXPECT_EQ(r.count(Finding::Warning), 0u) << dump_findings(r);
    EXPECT_EQ(r.format, "compressed-tensors");
    EXPECT_EQ(r.weights_only, !w4a4);
    EXPECT_EQ(r.modules_quantized, 32u);
  }
}

// The seed bug: experts left BF16 under an NVFP4 label.
MemCheckpoint experts_left_bf16(Format f) {
  auto m = good(f);
  for (const auto& [name, t] : source()) {
    if (name.find(".experts.") == std::string::npos) continue;
    const std::string module = name.substr(0, name.size() - 7);
    for (const char* suf : {".weight", ".weight_packed", ".weight_scale", ".weight_scale_2",
                            ".input_scale", ".weight_global_scale", ".input_global_scale"})
      m.tensors.erase(module + suf);
    m.tensors[name] = {DType::BF16, t.shape, bf16_bytes(t.data)};
  }
  return m;
}

TEST(VerifyBroken, ExpertsLeftBf16) {
  for (Format f : {Format::ModelOpt, Format::CompressedTensors}) {
    const auto r = verify_mem(experts_left_bf16(f));
    EXPECT_FALSE(r.ok());
    EXPECT_FINDING(r, Error, "quant.unquantized", "model.layers.0.mlp.experts.0.gate_proj");
    EXPECT_FINDING(r, Error, "quant.unquantized", "model.layers.1.mlp.experts.3.down_proj");
    EXPECT_FINDING(r, Error, "quant.total", "");
    EXPECT_EQ(r.modules_quantized, 8u);  // only q/k/v/o remain NVFP4
    // 24 expert matrices of 32x64 in BF16: 4096 bytes each, 1152 + 4 + 4 as NVFP4 (W4A4).
    EXPECT_EQ(r.actual_bytes - r.expected_bytes, 24u * (4096 - (1024 + 128 + 8)));
  }
}

TEST(VerifyBroken, OneExpertInputScaleMissing) {
  auto m = good();
  m.erase(kExpert + ".down_proj.input_scale");
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "input_scale.missing", kExpert + ".down_proj");
  EXPECT_EQ(r.count(Finding::Error), 1u) << dump_findings(r);

  auto b = good(Format::CompressedTensors);
  b.erase(kExpert + ".up_proj.input_global_scale");
  EXPECT_FINDING(verify_mem(b), Error, "input_scale.missing", kExpert + ".up_proj");
}

TEST(VerifyBroken, InputScaleZero) {
  auto m = good();
  m.set_f32(kExpert + ".down_proj.input_scale", 0.0f);
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "input_scale.value", kExpert + ".down_proj");
  // It also differs from the other experts' value.
  EXPECT_FINDING(r, Warning, "input_scale.experts", "model.layers.1.mlp.experts");
}

TEST(VerifyBroken, InputScaleNanAndNegative) {
  auto m = good();
  m.set_f32(kExpert + ".gate_proj.input_scale", std::nanf(""));
  m.set_f32("model.layers.0.self_attn.o_proj.input_scale", -0.001f);
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "input_scale.value", kExpert + ".gate_proj");
  EXPECT_FINDING(r, Error, "input_scale.value", "model.layers.0.self_attn.o_proj");
}

TEST(VerifyBroken, ExpertInputScalesDifferIsAWarning) {
  auto m = good();
  m.set_f32(kExpert + ".down_proj.input_scale", 2 * m.get_f32(kExpert + ".down_proj.input_scale"));
  const auto r = verify_mem(m);
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_FINDING(r, Warning, "input_scale.experts", "model.layers.1.mlp.experts");
}

TEST(VerifyBroken, GateUpGlobalScaleDiffersInOneExpert) {
  auto m = good();
  m.set_f32(kExpert + ".up_proj.weight_scale_2", 1.5f * m.get_f32(kExpert + ".up_proj.weight_scale_2"));
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "fusion.weight_scale_2", kExpert + ".up_proj");
  EXPECT_EQ(r.count(Finding::Error), 1u) << dump_findings(r);

  auto b = good(Format::CompressedTensors);
  b.set_f32(kExpert + ".gate_proj.weight_global_scale",
            0.5f * b.get_f32(kExpert + ".gate_proj.weight_global_scale"));
  const auto rb = verify_mem(b);
  EXPECT_FINDING(rb, Error, "fusion.weight_scale_2", kExpert);
}

TEST(VerifyBroken, QkvScalesNotShared) {
  BuildOptions o;
  o.share_qkv = false;  // each of q/k/v correctly encoded with its own s2
  const auto r = verify_mem(build_nvfp4(source(), o));
  EXPECT_FINDING(r, Error, "fusion.weight_scale_2", "model.layers.0.self_attn.");
  EXPECT_FINDING(r, Error, "fusion.weight_scale_2", "model.layers.1.self_attn.");
  for (const auto& f : r.findings)
    if (f.severity == Finding::Error) EXPECT_EQ(f.check, "fusion.weight_scale_2") << f.message;
}

TEST(VerifyBroken, RouterQuantized) {
  auto m = good();
  const std::string router = "model.layers.0.mlp.gate";
  m.erase(router + ".weight");
  const auto& w = source().at(router + ".weight");
  put_quantized(m, router, w, nvfp4_global_scale(amax_of(w)), nvfp4_global_scale(2.0f));
  m.remove_exclusion("model.layers.*.mlp.gate");
  m.add_exclusion("model.layers.1.mlp.gate");
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "role.quantized", router);
  EXPECT_FALSE(has_finding(r, Finding::Error, "role.quantized", "model.layers.1"));
}

TEST(VerifyBroken, RouterQuantizedButExcluded) {
  auto m = good();
  const std::string router = "model.layers.1.mlp.gate";
  m.erase(router + ".weight");
  const auto& w = source().at(router + ".weight");
  put_quantized(m, router, w, nvfp4_global_scale(amax_of(w)), nvfp4_global_scale(2.0f));
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "role.quantized", router);
  EXPECT_FINDING(r, Error, "exclude.quantized", router);
}

TEST(VerifyBroken, RouterNotListedAsExcluded) {
  auto m = good();
  m.remove_exclusion("model.layers.*.mlp.gate");
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "exclude.unlisted", "model.layers.0.mlp.gate");
  EXPECT_FINDING(r, Error, "exclude.unlisted", "model.layers.1.mlp.gate");
}

TEST(VerifyBroken, LmHeadNotListedAsExcluded) {
  // ModelOpt: vLLM builds lm_head as an NVFP4 layer unless excluded (ModelOptNvFp4LMHeadMethod).
  auto m = good();
  m.remove_exclusion("lm_head");
  EXPECT_FINDING(verify_mem(m), Error, "exclude.unlisted", "lm_head");
  // compressed-tensors targets "Linear" by class name, which vLLM's ParallelLMHead is not.
  auto b = good(Format::CompressedTensors);
  b.remove_exclusion("lm_head");
  const auto rb = verify_mem(b);
  EXPECT_TRUE(rb.ok()) << dump_findings(rb);
}

TEST(VerifyBroken, ExcludedLmHeadCarriesInputScale) {
  auto m = good();
  m.tensors["lm_head.input_scale"] = {DType::F32, {}, f32_bytes(0.001f)};
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "exclude.has_scales", "lm_head");
  EXPECT_EQ(r.count(Finding::Error), 1u) << dump_findings(r);
}

TEST(VerifyBroken, NanScaleByte) {
  for (uint8_t code : {uint8_t{0x7F}, uint8_t{0xFF}}) {
    auto m = good();
    m.at(kExpert + ".down_proj.weight_scale").bytes[5] = code;
    const auto r = verify_mem(m);
    EXPECT_FINDING(r, Error, "scale.nan", kExpert + ".down_proj");
    EXPECT_EQ(r.count(Finding::Error), 1u) << dump_findings(r);
  }
}

TEST(VerifyBroken, NegativeScaleByte) {
  auto m = good();
  m.at("model.layers.0.self_attn.q_proj.weight_scale").bytes[0] = 0xB8;  // -1.0 in E4M3
  EXPECT_FINDING(verify_mem(m), Error, "scale.negative", "model.layers.0.self_attn.q_proj");
}

TEST(VerifyBroken, ZeroScaleByteWithoutSourceIsAWarning) {
  auto m = good();
  m.at(kExpert + ".gate_proj.weight_scale").bytes[3] = 0x00;
  const auto r = verify_mem(m);
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_FINDING(r, Warning, "scale.zero", kExpert + ".gate_proj");
}

TEST(VerifyBroken, KNotMultipleOf16) {
  auto m = good();
  // o_proj of layer 1 rebuilt with K = 40: packed [64, 20], scales [64, 2].
  const std::string o = "model.layers.1.self_attn.o_proj";
  m.at(o + ".weight") = {DType::U8, {64, 20}, std::vector<uint8_t>(64 * 20, 0x22)};
  m.at(o + ".weight_scale") = {DType::F8_E4M3, {64, 2}, std::vector<uint8_t>(64 * 2, 0x38)};
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "shape.k16", o);
  EXPECT_TRUE(std::find(r.supported_tp.begin(), r.supported_tp.end(), 1) == r.supported_tp.end());
}

TEST(VerifyBroken, ExclusionNamesAQuantizedModule) {
  auto m = good();
  m.add_exclusion("model.layers.0.self_attn.o_proj");
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "exclude.quantized", "model.layers.0.self_attn.o_proj");
  EXPECT_EQ(r.count(Finding::Error), 1u) << dump_findings(r);

  auto w = good();
  w.add_exclusion("model.layers.*.experts.*");  // fnmatch: '*' crosses dots
  const auto rw = verify_mem(w);
  EXPECT_FINDING(rw, Error, "exclude.quantized", "model.layers.0.mlp.experts.0.gate_proj");
  EXPECT_FINDING(rw, Error, "exclude.quantized", "model.layers.1.mlp.experts.3.down_proj");

  auto b = good(Format::CompressedTensors);
  b.add_exclusion("re:.*experts\\.1\\.");
  const auto rb = verify_mem(b);
  EXPECT_FINDING(rb, Error, "exclude.quantized", "model.layers.0.mlp.experts.1.up_proj");
  EXPECT_FALSE(has_finding(rb, Finding::Error, "exclude.quantized", "experts.0"));
}

TEST(VerifyBroken, ConfigFilesDisagree) {
  auto m = good();
  (*m.hf_quant)["quantization"]["exclude_modules"].push_back("model.layers.1.self_attn.o_proj");
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "config.agree", "");
  EXPECT_NE(dump_findings(r).find("model.layers.1.self_attn.o_proj"), std::string::npos);

  auto a = good();
  (*a.hf_quant)["quantization"]["quant_algo"] = "W4A16_NVFP4";
  EXPECT_FINDING(verify_mem(a), Error, "config.agree", "");

  auto k = good();
  (*k.hf_quant)["quantization"]["kv_cache_quant_algo"] = "FP8";
  EXPECT_FINDING(verify_mem(k), Error, "config.agree", "");
}

TEST(VerifyBroken, HfQuantConfigKeyMissing) {
  auto m = good();
  (*m.hf_quant)["quantization"].erase("kv_cache_quant_algo");
  EXPECT_FINDING(verify_mem(m), Error, "config.hf_quant_keys", "");
}

TEST(VerifyBroken, WrongGroupSize) {
  auto m = good();
  m.config["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 32;
  EXPECT_FINDING(verify_mem(m), Error, "config.format", "");
}

TEST(VerifyBroken, NoQuantizationConfig) {
  auto m = good();
  m.config.erase("quantization_config");
  m.hf_quant.reset();
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "config.missing", "");
  EXPECT_EQ(r.format, "");
}

TEST(VerifyBroken, BlockScalesStoredAsU8) {
  auto m = good();
  m.at(kExpert + ".gate_proj.weight_scale").dtype = DType::U8;
  EXPECT_FINDING(verify_mem(m), Error, "tensor.dtype", kExpert + ".gate_proj");
}

TEST(VerifyBroken, WeightScaleWrongShapeAndMissing) {
  auto m = good();
  m.at("model.layers.0.self_attn.q_proj.weight_scale").shape = {4, 64};  // same bytes, transposed
  m.erase("model.layers.0.self_attn.o_proj.weight_scale");
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "tensor.shape", "model.layers.0.self_attn.q_proj");
  EXPECT_FINDING(r, Error, "tensor.missing", "model.layers.0.self_attn.o_proj");
}

TEST(VerifyBroken, GlobalScaleMissingZeroOrInfinite) {
  auto m = good();
  m.erase("model.layers.0.self_attn.o_proj.weight_scale_2");
  m.set_f32(kExpert + ".down_proj.weight_scale_2", 0.0f);
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "tensor.missing", "model.layers.0.self_attn.o_proj");
  EXPECT_FINDING(r, Error, "scale.global", kExpert + ".down_proj");

  auto b = good(Format::CompressedTensors);
  b.set_f32(kExpert + ".down_proj.weight_global_scale", INFINITY);
  EXPECT_FINDING(verify_mem(b), Error, "scale.global", kExpert + ".down_proj");
}

TEST(VerifyBroken, InputScaleInWeightOnlyCheckpoint) {
  auto m = good(Format::ModelOpt, false);
  m.tensors[kExpert + ".down_proj.input_scale"] = {DType::F32, {}, f32_bytes(0.001f)};
  const auto r = verify_mem(m);
  EXPECT_TRUE(r.ok()) << dump_findings(r);  // ModelOpt W4A16 loaders discard it
  EXPECT_FINDING(r, Warning, "input_scale.unexpected", kExpert + ".down_proj");

  auto b = good(Format::CompressedTensors, false);
  b.tensors[kExpert + ".down_proj.input_global_scale"] = {DType::F32, {1}, f32_bytes(1000.0f)};
  EXPECT_FINDING(verify_mem(b), Error, "input_scale.unexpected", kExpert + ".down_proj");
}

TEST(VerifyBroken, ExpertMissing) {
  auto m = good();
  for (const char* proj : {"gate_proj", "up_proj", "down_proj"})
    for (const char* suf : {".weight", ".weight_scale", ".weight_scale_2", ".input_scale"})
      m.erase(kExpert + "." + proj + suf);
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "experts.missing", "model.layers.1.mlp.experts");
}

TEST(VerifyBroken, OrphanScaleTensor) {
  auto m = good();
  m.tensors["model.layers.0.self_attn.q_norm.weight_scale_2"] = {DType::F32, {}, f32_bytes(0.01f)};
  EXPECT_FINDING(verify_mem(m), Error, "tensor.orphan", "model.layers.0.self_attn.q_norm");
}

TEST(VerifyBroken, FusedGroupPartlyQuantized) {
  auto m = good();
  const std::string v = "model.layers.0.self_attn.v_proj";
  for (const char* suf : {".weight", ".weight_scale", ".weight_scale_2", ".input_scale"}) m.erase(v + suf);
  const auto& w = source().at(v + ".weight");
  m.tensors[v + ".weight"] = {DType::BF16, w.shape, bf16_bytes(w.data)};
  m.add_exclusion(v);
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "fusion.partial", v);
}

TEST(VerifyBroken, FormatNamesMixed) {
  auto m = good();
  auto t = m.at(kExpert + ".down_proj.weight_scale_2");
  m.erase(kExpert + ".down_proj.weight_scale_2");
  m.tensors[kExpert + ".down_proj.weight_global_scale"] = {DType::F32, {1}, t.bytes};
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "tensor.naming", kExpert + ".down_proj");
  EXPECT_FINDING(r, Error, "tensor.missing", kExpert + ".down_proj");
}

TEST(VerifyBroken, CompressedTensorsExtraKeysWarn) {
  auto b = good(Format::CompressedTensors);
  b.config["quantization_config"]["config_groups"]["group_0"]["weights"]["scale_dtype"] =
      "torch.float8_e4m3fn";
  const auto r = verify_mem(b);
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_FINDING(r, Warning, "config.ct_compat", "");
}

TEST(VerifyBroken, CompressedTensorsRouterIgnoredByExactName) {
  // compressed-tensors "ignore" entries without "re:" are exact names: "mlp.gate" alone does not
  // exclude "model.layers.0.mlp.gate".
  auto b = good(Format::CompressedTensors);
  b.config["quantization_config"]["ignore"] = {"lm_head", "mlp.gate"};
  const auto r = verify_mem(b);
  EXPECT_FINDING(r, Error, "exclude.unlisted", "model.layers.0.mlp.gate");
  EXPECT_FINDING(r, Info, "exclude.unmatched", "");
}

TEST(VerifyBroken, VisionPartAndEmbeddingQuantized) {
  auto m = good();
  FloatTensor vis{{64, 64}, std::vector<float>(64 * 64, 0.25f)};
  put_quantized(m, "model.visual.blocks.0.attn.qkv", vis, nvfp4_global_scale(0.25f),
                nvfp4_global_scale(1.0f));
  const auto& emb = source().at("model.embed_tokens.weight");
  m.erase("model.embed_tokens.weight");
  put_quantized(m, "model.embed_tokens", emb, nvfp4_global_scale(amax_of(emb)), nvfp4_global_scale(1.0f));
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Error, "role.quantized", "model.visual.blocks.0.attn.qkv");
  EXPECT_FINDING(r, Error, "role.quantized", "model.embed_tokens");
}

// ModelOpt keeps gpt-oss / Llama-4 BMM experts 3-D (spec section 4): "<x>" U8 [E, H/2, 2I],
// "<x>_weight_scale" F8_E4M3 [E, H/16, 2I], one "<x>_weight_scale_2" and "<x>_input_scale".
void add_bmm_experts(MemCheckpoint& m, const std::string& x) {
  m.tensors[x] = {DType::U8, {4, 32, 64}, std::vector<uint8_t>(4 * 32 * 64, 0x21)};
  m.tensors[x + "_weight_scale"] = {DType::F8_E4M3, {4, 4, 64}, std::vector<uint8_t>(4 * 4 * 64, 0x38)};
  m.tensors[x + "_weight_scale_2"] = {DType::F32, {}, f32_bytes(0.001f)};
  m.tensors[x + "_input_scale"] = {DType::F32, {}, f32_bytes(0.002f)};
}

TEST(VerifyGood, ModelOptBmmExpertLayoutIsRecognised) {
  auto m = good();
  const std::string x = "model.layers.0.mlp.experts.gate_up_proj";
  add_bmm_experts(m, x);
  const auto r = verify_mem(m);
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_FINDING(r, Info, "tensor.shape", x);
  EXPECT_EQ(r.modules_quantized, 33u);

  auto bad = good();
  add_bmm_experts(bad, x);
  bad.at(x + "_weight_scale").shape = {4, 64, 4};
  bad.at(x + "_weight_scale").bytes[7] = 0xFF;
  bad.erase(x + "_input_scale");
  const auto rb = verify_mem(bad);
  EXPECT_FINDING(rb, Error, "tensor.shape", x);
  EXPECT_FINDING(rb, Error, "scale.nan", x);
  EXPECT_FINDING(rb, Error, "input_scale.missing", x);
}

TEST(VerifyBroken, IndexAndShardsDisagree) {
  TempDir dir;
  good().write(dir.path());
  const auto index = dir.path() / "model.safetensors.index.json";
  ASSERT_TRUE(std::filesystem::exists(index)) << "the fixture must be sharded";
  auto j = nlohmann::json::parse(std::ifstream(index));
  j["weight_map"].erase("model.norm.weight");
  std::ofstream(index) << j.dump();
  const auto r = verify::verify_checkpoint(dir.path(), {});
  EXPECT_FINDING(r, Error, "checkpoint.read", "");
  EXPECT_NE(dump_findings(r).find("model.norm.weight"), std::string::npos) << dump_findings(r);
}

TEST(VerifyReport, JsonAndTableNameModuleAndRule) {
  auto m = good();
  m.tensors["lm_head.input_scale"] = {DType::F32, {}, f32_bytes(0.001f)};
  const auto r = verify_mem(m);
  const auto j = r.to_json();
  EXPECT_FALSE(j["ok"].get<bool>());
  EXPECT_EQ(j["format"], "modelopt");
  EXPECT_EQ(j["mode"], "W4A4");
  bool found = false;
  for (const auto& f : j["findings"])
    found |= f["check"] == "exclude.has_scales" && f["module"] == "lm_head" && f["severity"] == "error";
  EXPECT_TRUE(found) << j.dump(2);
  bool failed = false;
  for (const auto& c : j["checks"])
    if (c["id"] == "exclude.has_scales") failed = c["status"] == "failed";
  EXPECT_TRUE(failed);
  const std::string table = r.format_table();
  EXPECT_NE(table.find("exclude.has_scales"), std::string::npos);
  EXPECT_NE(table.find("FAILED"), std::string::npos);
  EXPECT_NE(table.find("lm_head"), std::string::npos);
  EXPECT_NE(table.find("result: FAIL"), std::string::npos);
}

}  // namespace
}  // namespace fp4kit::testing

namespace fp4kit::testing {
namespace {

// Whatever a checkpoint holds, verify reports findings and never throws or crashes: random shape,
// dtype and byte damage to the good checkpoint.
TEST(VerifyRobustness, RandomDamageNeverThrows) {
  std::mt19937 rng(2026);
  const auto src = make_moe_source();
  const auto base = build_nvfp4(src);
  TempDir src_dir;
  write_source(src_dir.path(), src);
  verify::VerifyOptions with_source;
  with_source.source = src_dir.path();
  std::vector<std::string> names;
  for (const auto& [n, t] : base.tensors) names.push_back(n);
  const DType dtypes[] = {DType::U8, DType::F8_E4M3, DType::F32, DType::BF16, DType::I64, DType::BOOL};
  for (int round = 0; round < 40; ++round) {
    auto m = base;
    for (int k = 0; k < 4; ++k) {
      auto& t = m.at(names[rng() % names.size()]);
      switch (rng() % 4) {
        case 0: {  // new shape (bytes resized to match)
          std::vector<uint64_t> shape;
          const size_t rank = rng() % 4;
          for (size_t d = 0; d < rank; ++d) shape.push_back(rng() % 5 == 0 ? 0 : 1 + rng() % 40);
          t.shape = shape;
          uint64_t n = dtype_size(t.dtype);
          for (auto d : shape) n *= d;
          t.bytes.assign(n, static_cast<uint8_t>(rng()));
          break;
        }
        case 1: {  // other dtype, same byte count when possible
          const DType d = dtypes[rng() % 6];
          uint64_t n = dtype_size(d);
          for (auto x : t.shape) n *= x;
          t.dtype = d;
          t.bytes.resize(n, 0xFF);
          break;
        }
        case 2:
          for (auto& b : t.bytes) b = static_cast<uint8_t>(rng());
          break;
        default:
          if (t.shape.empty()) t.shape = {1};
          break;
      }
    }
    verify::VerifyReport r;
    EXPECT_NO_THROW(r = verify_mem(m, round % 2 ? with_source : verify::VerifyOptions{}))
        << "round " << round;
    EXPECT_NO_THROW((void)r.to_json().dump());
    EXPECT_NO_THROW((void)r.format_table());
  }
}

}  // namespace
}  // namespace fp4kit::testing
