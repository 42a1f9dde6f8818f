// The JSON loaders read, against NVFP4-SPEC.md sections 5-6 (keys written out from the spec).
#include <gtest/gtest.h>

#include "fp4kit/export/quant_config.hpp"

namespace fp4kit {
namespace {

Plan plan_with_excludes() {
  Plan p;
  p.exclude_modules = {"lm_head", "model.layers.0.mlp.gate"};
  return p;
}

TEST(QuantConfig, ModelOptW4A4) {
  QuantOptions o;
  const auto q = quantization_config(plan_with_excludes(), o);
  EXPECT_EQ(q["quant_method"], "modelopt");
  EXPECT_EQ(q["quant_algo"], "NVFP4");
  const auto& g = q["config_groups"]["group_0"];
  EXPECT_EQ(g["targets"], nlohmann::ordered_json::array({"Linear"}));
  EXPECT_EQ(g["weights"]["num_bits"], 4);
  EXPECT_EQ(g["weights"]["type"], "float");
  EXPECT_EQ(g["weights"]["group_size"], 16);
  EXPECT_EQ(g["weights"]["dynamic"], false);
  ASSERT_TRUE(g.contains("input_activations"));
  EXPECT_EQ(g["input_activations"]["group_size"], 16);
  EXPECT_EQ(q["ignore"], nlohmann::ordered_json::array({"lm_head", "model.layers.0.mlp.gate"}));
  EXPECT_EQ(q["producer"]["name"], "fp4kit");

  const auto h = hf_quant_config(plan_with_excludes(), o);
  // All four keys present, null allowed.
  ASSERT_TRUE(h["quantization"].contains("kv_cache_quant_algo"));
  EXPECT_TRUE(h["quantization"]["kv_cache_quant_algo"].is_null());
  EXPECT_EQ(h["quantization"]["quant_algo"], "NVFP4");
  EXPECT_EQ(h["quantization"]["group_size"], 16);
  EXPECT_EQ(h["quantization"]["exclude_modules"], q["ignore"]);
  EXPECT_EQ(h["producer"]["name"], "fp4kit");
}

TEST(QuantConfig, ModelOptWeightsOnly) {
  QuantOptions o;
  o.weights_only = true;
  const auto q = quantization_config(plan_with_excludes(), o);
  EXPECT_EQ(q["quant_algo"], "W4A16_NVFP4");
  EXPECT_FALSE(q["config_groups"]["group_0"].contains("input_activations"));
  EXPECT_EQ(hf_quant_config(plan_with_excludes(), o)["quantization"]["quant_algo"], "W4A16_NVFP4");
}

TEST(QuantConfig, CompressedTensors) {
  QuantOptions o;
  o.format = OutputFormat::CompressedTensors;
  const auto q = quantization_config(plan_with_excludes(), o);
  EXPECT_EQ(q["quant_method"], "compressed-tensors");
  EXPECT_EQ(q["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(q["quantization_status"], "compressed");
  EXPECT_TRUE(q["kv_cache_scheme"].is_null());
  const auto& g = q["config_groups"]["group_0"];
  EXPECT_EQ(g["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(g["weights"]["strategy"], "tensor_group");
  EXPECT_EQ(g["weights"]["symmetric"], true);
  EXPECT_EQ(g["input_activations"]["dynamic"], "local");
  // Older compressed-tensors rejects unknown keys.
  EXPECT_FALSE(g["weights"].contains("scale_dtype"));
  EXPECT_FALSE(g["weights"].contains("zp_dtype"));

  o.weights_only = true;
  EXPECT_TRUE(quantization_config(plan_with_excludes(), o)["config_groups"]["group_0"]
                  ["input_activations"]
                      .is_null());
}

}  // namespace
}  // namespace fp4kit
