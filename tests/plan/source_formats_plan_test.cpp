// Plans for quantized source formats (issue 8): MXFP4 experts are refused clearly until the BMM
// layout exists; FP8 block-scaled weights carry their encoding.
#include <gtest/gtest.h>

#include "fp4kit/error.hpp"
#include "plan/plan_test_util.hpp"

namespace fp4kit {
namespace {

using testing::config_of;
using testing::Tensors;

TEST(SourceFormatsPlan, Mxfp4ExpertsAreRefusedNamingTheTensors) {
  Tensors t;
  const std::string p = "model.layers.0.mlp.experts.";
  t.add("model.layers.0.self_attn.q_proj.weight", {64, 64});
  t.add(p + "gate_up_proj_blocks", {4, 128, 2, 16}, DType::U8);
  t.add(p + "gate_up_proj_scales", {4, 128, 2}, DType::U8);
  t.add(p + "gate_up_proj_bias", {4, 128});
  const auto cfg = config_of(R"({"architectures":["GptOssForCausalLM"],"model_type":"gpt_oss",
      "hidden_size":64,"num_hidden_layers":1,"num_local_experts":4,
      "quantization_config":{"quant_method":"mxfp4"}})");
  try {
    build_plan_from_tensors(t.sorted(), cfg, {});
    FAIL() << "an MXFP4 source must not be planned (its blocks would be copied under an NVFP4 "
              "config)";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p + "gate_up_proj_blocks [4,128,2,16] + " + p + "gate_up_proj_scales"),
              std::string::npos) << msg;
    EXPECT_NE(msg.find("MXFP4"), std::string::npos) << msg;
  }
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
