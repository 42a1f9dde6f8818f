// Plans for quantized source formats (issue 8): gpt-oss MXFP4 experts become BMM entries decoded
// in the stream (their scales absorbed), kept ones are written as BF16; MXFP4 anywhere else and
// broken pairs are refused naming the tensors; FP8 block-scaled weights carry their encoding.
#include <gtest/gtest.h>

#include <map>
#include <tuple>

#include "fp4kit/error.hpp"
#include "plan/plan_test_util.hpp"

namespace fp4kit {
namespace {

using testing::config_of;
using testing::plan_error;
using testing::Tensors;

const char* kGptOssMxfp4Config = R"({"architectures":["GptOssForCausalLM"],"model_type":"gpt_oss",
    "hidden_size":64,"intermediate_size":32,"num_hidden_layers":1,"num_local_experts":4,
    "quantization_config":{"quant_method":"mxfp4"}})";

TEST(SourceFormatsPlan, Mxfp4ExpertsAreQuantizedAsBmmAndTheirScalesAbsorbed) {
  // H = 64, I = 32 (MXFP4 needs K % 32 == 0 for both projections), 4 experts.
  Tensors t;
  const std::string p = "model.layers.0.mlp.experts.";
  testing::add_attention(t, "model.layers.0.", true);
  t.add("model.layers.0.mlp.router.weight", {4, 64});
  t.add(p + "gate_up_proj_blocks", {4, 64, 2, 16}, DType::U8);  // N = 2I = 64, K = H = 64
  t.add(p + "gate_up_proj_scales", {4, 64, 2}, DType::U8);
  t.add(p + "down_proj_blocks", {4, 64, 1, 16}, DType::U8);  // N = H = 64, K = I = 32
  t.add(p + "down_proj_scales", {4, 64, 1}, DType::U8);
  const Plan plan = build_plan_from_tensors(t.sorted(), config_of(kGptOssMxfp4Config), {});
  EXPECT_EQ(plan.family, "gpt_oss");
  const PlanEntry& gu = ENTRY(plan, p + "gate_up_proj");
  EXPECT_EQ(gu.action, Action::Quantize);
  EXPECT_EQ(gu.encoding, SourceEncoding::Mxfp4);
  EXPECT_EQ(gu.source.tensor, p + "gate_up_proj_blocks");
  EXPECT_EQ(gu.source_scales, p + "gate_up_proj_scales");
  EXPECT_EQ(gu.bmm_experts, 4u);
  EXPECT_EQ(gu.rows, 64u);  // N = 2I
  EXPECT_EQ(gu.cols, 64u);  // K = H
  EXPECT_NE(gu.reason.find("MXFP4"), std::string::npos) << gu.reason;
  const PlanEntry& dn = ENTRY(plan, p + "down_proj");
  EXPECT_EQ(dn.rows, 64u);
  EXPECT_EQ(dn.cols, 32u);
  EXPECT_EQ(dn.role, Role::BmmExpertDown);
  for (const char* s : {"gate_up_proj_scales", "down_proj_scales"})
    EXPECT_EQ(ENTRY(plan, p + s).action, Action::Drop) << s;
  EXPECT_EQ(testing::find_entry(plan, p + "gate_up_proj_blocks"), nullptr)
      << "the blocks are the source of the quantized entry, never an output name";
  // NVFP4 bytes out: E * N * K * (1/2 + 1/16) + s2 + input_scale.
  EXPECT_EQ(planned_output_bytes(gu), 4u * 64 * 64 / 2 + 4u * 64 * 64 / 16 + 8);
}

TEST(SourceFormatsPlan, KeptMxfp4ExpertsAreWrittenAsBf16UnderTheirBmmName) {
  Tensors t;
  const std::string p = "model.layers.0.mlp.experts.";
  testing::add_attention(t, "model.layers.0.", true);
  t.add(p + "gate_up_proj_blocks", {4, 64, 2, 16}, DType::U8);
  t.add(p + "gate_up_proj_scales", {4, 64, 2}, DType::U8);
  t.add(p + "down_proj_blocks", {4, 64, 1, 16}, DType::U8);
  t.add(p + "down_proj_scales", {4, 64, 1}, DType::U8);
  PlanOptions o;
  o.rules.push_back(testing::exclude("*.mlp.experts.*"));
  const Plan plan = build_plan_from_tensors(t.sorted(), config_of(kGptOssMxfp4Config), o);
  const PlanEntry& gu = ENTRY(plan, p + "gate_up_proj");
  EXPECT_EQ(gu.action, Action::Dequantize);
  EXPECT_EQ(gu.encoding, SourceEncoding::Mxfp4);
  EXPECT_EQ(gu.bmm_experts, 4u);
  EXPECT_EQ(planned_output_bytes(gu), 4u * 64 * 64 * 2);  // BF16 [E, K, N]
  EXPECT_EQ(ENTRY(plan, p + "gate_up_proj_scales").action, Action::Drop);
  EXPECT_TRUE(testing::contains(plan.exclude_modules, p + "gate_up_proj"));
  EXPECT_TRUE(testing::contains(plan.exclude_modules, p + "down_proj"));
}

TEST(SourceFormatsPlan, BrokenMxfp4PairsAreErrorsNamingTheTensors) {
  const std::string p = "model.layers.0.mlp.experts.";
  {
    Tensors t;
    t.add(p + "gate_up_proj_blocks", {4, 64, 2, 16}, DType::U8);
    t.add(p + "down_proj_blocks", {4, 64, 1, 16}, DType::U8);
    t.add(p + "down_proj_scales", {4, 64, 1}, DType::U8);
    const std::string msg = plan_error(t.sorted(), config_of(kGptOssMxfp4Config));
    EXPECT_NE(msg.find(p + "gate_up_proj_blocks [4,64,2,16]: MXFP4 blocks without their E8M0 "
                           "scale tensor " + p + "gate_up_proj_scales"),
              std::string::npos) << msg;
  }
  {
    Tensors t;
    t.add(p + "gate_up_proj_blocks", {4, 64, 2, 16}, DType::U8);
    t.add(p + "gate_up_proj_scales", {4, 64, 4}, DType::U8);  // wrong group count
    t.add(p + "down_proj_blocks", {4, 64, 1, 16}, DType::U8);
    t.add(p + "down_proj_scales", {4, 64, 1}, DType::U8);
    const std::string msg = plan_error(t.sorted(), config_of(kGptOssMxfp4Config));
    EXPECT_NE(msg.find(p + "gate_up_proj_scales U8 [4,64,4]: expected U8 [4,64,2]"),
              std::string::npos) << msg;
  }
}

TEST(SourceFormatsPlan, Mxfp4OutsideKnownExpertsIsRefused) {
  Tensors t;
  const std::string p = "model.layers.0.mlp.experts.";
  testing::add_attention(t, "model.layers.0.");
  t.add(p + "gate_up_proj_blocks", {4, 128, 2, 16}, DType::U8);
  t.add(p + "gate_up_proj_scales", {4, 128, 2}, DType::U8);
  const auto cfg = config_of(R"({"architectures":["LlamaForCausalLM"],"model_type":"llama",
      "hidden_size":64,"num_hidden_layers":1})");
  const std::string msg = plan_error(t.sorted(), cfg);
  EXPECT_NE(msg.find(p + "gate_up_proj_blocks [4,128,2,16] + " + p + "gate_up_proj_scales"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("MXFP4 source outside the experts"), std::string::npos) << msg;
}

TEST(SourceFormatsPlan, Fp8BlockSizeComesFromTheConfig) {
  Tensors t;
  t.add("model.layers.0.self_attn.o_proj.weight", {256, 256}, DType::F8_E4M3);
  t.add("model.layers.0.self_attn.o_proj.weight_scale_inv", {4, 2}, DType::F32);  // 64x128 blocks
  const auto cfg = config_of(R"({"architectures":["LlamaForCausalLM"],"model_type":"llama",
      "hidden_size":256,"num_hidden_layers":1,
      "quantization_config":{"quant_method":"fp8","weight_block_size":[64,128]}})");
  const Plan p = build_plan_from_tensors(t.sorted(), cfg, {});
  const PlanEntry& o = ENTRY(p, "model.layers.0.self_attn.o_proj");
  EXPECT_EQ(o.encoding, SourceEncoding::Fp8Block);
  EXPECT_EQ(o.fp8_block[0], 64u);
  EXPECT_EQ(o.fp8_block[1], 128u);
  EXPECT_NE(o.reason.find("dequantized from FP8 (64x128 block scales)"), std::string::npos) << o.reason;
}

}  // namespace
}  // namespace fp4kit

namespace fp4kit {
namespace {

// Kimi-K2.5 as Moonshot ships it: the kimi_k25 wrapper, its kimi_k2 text model's routed experts
// compressed-tensors INT4 (weight_packed I32 [n, k/8], a BF16 scale per 32 columns,
// weight_shape), the quantization_config inside text_config.
const char* kKimiK25Config = R"({"architectures":["KimiK25ForConditionalGeneration"],
    "model_type":"kimi_k25","text_config":{"model_type":"kimi_k2",
    "architectures":["DeepseekV3ForCausalLM"],"hidden_size":64,"moe_intermediate_size":32,
    "num_hidden_layers":1,"n_routed_experts":2,"num_experts_per_tok":1,
    "quantization_config":{"quant_method":"compressed-tensors","format":"pack-quantized",
      "config_groups":{"group_0":{"targets":["Linear"],"weights":{"num_bits":4,"type":"int",
      "symmetric":true,"strategy":"group","group_size":32}}}}}})";

struct K25 {
  Tensors t;
  std::map<std::string, std::vector<int64_t>> shapes;
  K25() {
    const std::string l = "language_model.model.layers.0.mlp.";
    t.add(l + "gate.weight", {2, 64});
    for (int e = 0; e < 2; ++e)
      for (auto [proj, n, k] : {std::tuple{"gate_proj", 32, 64}, std::tuple{"up_proj", 32, 64},
                                std::tuple{"down_proj", 64, 32}}) {
        const std::string m = l + "experts." + std::to_string(e) + "." + proj;
        t.add(m + ".weight_packed", {uint64_t(n), uint64_t(k / 8)}, DType::I32);
        t.add(m + ".weight_scale", {uint64_t(n), uint64_t(k / 32)});
        t.add(m + ".weight_shape", {2}, DType::I32);
        shapes[m + ".weight_shape"] = {n, k};
      }
    t.add("language_model.lm_head.weight", {256, 64});
    t.add("language_model.model.embed_tokens.weight", {256, 64});
    t.add("vision_tower.encoder.blocks.0.wqkv.weight", {96, 32});
    t.add("mm_projector.proj.0.weight", {64, 64});
  }
  Plan plan(const PlanOptions& o = {}) const {
    return build_plan_from_tensors(t.sorted(), config_of(kKimiK25Config), o,
                                   [this](const std::string& n) { return shapes.at(n); });
  }
};

TEST(SourceFormatsPlan, PackedIntExpertsAreDecodedWithTheirScalesAndShapesAbsorbed) {
  const K25 k;
  const Plan plan = k.plan();
  EXPECT_EQ(plan.family, "deepseek_v3");
  const std::string m = "language_model.model.layers.0.mlp.experts.1.down_proj";
  const PlanEntry& e = ENTRY(plan, m);
  EXPECT_EQ(e.action, Action::Quantize);
  EXPECT_EQ(e.role, Role::ExpertDown);
  EXPECT_EQ(e.encoding, SourceEncoding::PackedInt);
  EXPECT_EQ(e.source.tensor, m + ".weight_packed");
  EXPECT_EQ(e.source_scales, m + ".weight_scale");
  EXPECT_EQ(e.source_dtype, DType::I32);
  EXPECT_EQ(e.int_bits, 4);
  EXPECT_EQ(e.int_group, 32u);
  EXPECT_EQ(e.rows, 64u);
  EXPECT_EQ(e.cols, 32u);
  EXPECT_EQ(e.source_bytes, 64u * 4 * 4 + 64u * 1 * 2);  // the integers and the scales
  EXPECT_NE(e.reason.find("dequantized from INT4 (compressed-tensors pack-quantized, a scale per "
                          "32 columns)"), std::string::npos) << e.reason;
  for (const char* part : {".weight_scale", ".weight_shape"})
    EXPECT_EQ(ENTRY(plan, m + part).action, Action::Drop) << part;
  EXPECT_EQ(testing::find_entry(plan, m + ".weight_packed"), nullptr);
  EXPECT_EQ(ENTRY(plan, "vision_tower.encoder.blocks.0.wqkv.weight").action, Action::Keep);
  EXPECT_EQ(ENTRY(plan, "mm_projector.proj.0.weight").action, Action::Keep);
  // Kept text modules under the checkpoint's names and vLLM's kimi_k25 names; the vision tower
  // and projector as wildcards.
  for (const char* x : {"language_model.model.layers.0.mlp.gate", "language_model.layers.0.mlp.gate",
                        "language_model.lm_head", "lm_head", "vision_tower*", "mm_projector*"})
    EXPECT_TRUE(testing::contains(plan.exclude_modules, x)) << x;
}

TEST(SourceFormatsPlan, KeptPackedIntLinearIsWrittenAsBf16OfItsLogicalShape) {
  const K25 k;
  PlanOptions o;
  const std::string m = "language_model.model.layers.0.mlp.experts.0.up_proj";
  o.rules.push_back(testing::exclude("*.experts.0.*"));
  const Plan plan = k.plan(o);
  const PlanEntry& e = ENTRY(plan, m + ".weight");
  EXPECT_EQ(e.action, Action::Dequantize);
  EXPECT_EQ(e.encoding, SourceEncoding::PackedInt);
  EXPECT_EQ(e.shape, (std::vector<uint64_t>{32, 64}));
  EXPECT_EQ(planned_output_bytes(e), 32u * 64 * 2);
  EXPECT_EQ(ENTRY(plan, m + ".weight_scale").action, Action::Drop);
  EXPECT_TRUE(testing::contains(plan.exclude_modules, m));
  EXPECT_TRUE(testing::contains(plan.exclude_modules,
                                "language_model.layers.0.mlp.experts.0.up_proj"));
}

TEST(SourceFormatsPlan, PackedIntWithoutItsPartsOrScheme) {
  {
    K25 k;
    std::erase_if(k.t.list, [](const TensorMeta& t) {
      return t.name == "language_model.model.layers.0.mlp.experts.1.gate_proj.weight_scale";
    });
    const std::string err = [&] {
      try {
        k.plan();
      } catch (const Error& e) {
        return std::string(e.what());
      }
      return std::string();
    }();
    EXPECT_NE(err.find("experts.1.gate_proj.weight_packed has no scale tensor "
                       "language_model.model.layers.0.mlp.experts.1.gate_proj.weight_scale"),
              std::string::npos) << err;
  }
  {
    const K25 k;  // the same tensors without a pack-quantized quantization_config
    const std::string err = plan_error(
        k.t.sorted(), config_of(R"({"model_type":"deepseek_v3","hidden_size":64,
                                    "num_hidden_layers":1,"n_routed_experts":2})"));
    EXPECT_NE(err.find("no compressed-tensors quantization_config with format pack-quantized"),
              std::string::npos) << err;
  }
}

}  // namespace
}  // namespace fp4kit
