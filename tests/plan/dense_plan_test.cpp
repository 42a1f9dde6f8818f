// Dense families (llama, mistral, qwen2, qwen3): expected plans written from spec sections 3 and 7.
#include <gtest/gtest.h>

#include "fp4kit/error.hpp"
#include "plan/plan_test_util.hpp"

namespace fp4kit {
namespace {

using namespace fp4kit::testing;

Tensors llama_tensors(uint64_t inter, bool lm_head) {
  Tensors t;
  t.add("model.embed_tokens.weight", {256, 64});
  if (lm_head) t.add("lm_head.weight", {256, 64});
  t.add("model.norm.weight", {64});
  for (int l = 0; l < 2; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add_attention(t, p);
    add_dense_mlp(t, p, inter);
  }
  return t;
}

const char* kLlamaConfig = R"({"architectures":["LlamaForCausalLM"],"model_type":"llama",
    "hidden_size":64,"num_attention_heads":8,"num_key_value_heads":4,"num_hidden_layers":2,
    "intermediate_size":128})";

TEST(DensePlan, LlamaQuantizesEveryLinearAndKeepsTheRest) {
  Plan p = build_plan_from_tensors(llama_tensors(128, true).sorted(), config_of(kLlamaConfig), {});
  EXPECT_EQ(p.family, "llama");
  ASSERT_EQ(p.entries.size(), 3u + 2 * 9);
  EXPECT_EQ(count_action(p, Action::Quantize), 2u * 7);  // q k v o gate up down
  EXPECT_EQ(count_action(p, Action::Keep), 3u + 2 * 2);  // embed, lm_head, norm, 2 norms/layer

  const PlanEntry& q = ENTRY(p, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(q.action, Action::Quantize);
  EXPECT_EQ(q.role, Role::AttnQ);
  EXPECT_EQ(q.layer, 0);
  EXPECT_EQ(q.rows, 64u);
  EXPECT_EQ(q.cols, 64u);
  EXPECT_EQ(q.source.tensor, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.source.expert, -1);
  EXPECT_EQ(q.source.row_begin, 0u);
  EXPECT_EQ(q.source.row_end, 64u);
  EXPECT_EQ(q.source_bytes, 64u * 64 * 2);
  const PlanEntry& k = ENTRY(p, "model.layers.0.self_attn.k_proj");
  EXPECT_EQ(k.rows, 32u);

  // Spec 3: q/k/v share weight_scale_2 and input_scale; one group per layer.
  ASSERT_GE(q.weight_group, 0);
  EXPECT_EQ(q.weight_group, q.input_group);
  EXPECT_EQ(member_names(p, q.weight_group),
            (std::vector<std::string>{"model.layers.0.self_attn.k_proj",
                                      "model.layers.0.self_attn.q_proj",
                                      "model.layers.0.self_attn.v_proj"}));
  EXPECT_NE(ENTRY(p, "model.layers.1.self_attn.q_proj").weight_group, q.weight_group);
  // gate/up share both; o_proj and down_proj have their own s2 and their own input_scale.
  const PlanEntry& g = ENTRY(p, "model.layers.1.mlp.gate_proj");
  EXPECT_EQ(member_names(p, g.weight_group),
            (std::vector<std::string>{"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"}));
  EXPECT_EQ(g.input_group, g.weight_group);
  for (const char* lone : {"model.layers.0.self_attn.o_proj", "model.layers.1.mlp.down_proj"}) {
    const PlanEntry& e = ENTRY(p, lone);
    EXPECT_EQ(e.action, Action::Quantize) << lone;
    EXPECT_EQ(e.weight_group, -1) << lone;
    ASSERT_GE(e.input_group, 0) << lone;
    EXPECT_EQ(member_names(p, e.input_group), std::vector<std::string>{lone});
  }

  const PlanEntry& head = ENTRY(p, "lm_head.weight");
  EXPECT_EQ(head.action, Action::Keep);
  EXPECT_NE(head.reason.find("lm_head"), std::string::npos);
  EXPECT_EQ(ENTRY(p, "model.embed_tokens.weight").action, Action::Keep);
  EXPECT_EQ(ENTRY(p, "model.norm.weight").role, Role::Norm);
  // ModelOpt lists the embedding too (its quantizers are disabled); loaders ignore that entry.
  EXPECT_EQ(p.exclude_modules, (std::vector<std::string>{"lm_head", "model.embed_tokens"}));
  EXPECT_TRUE(p.warnings.empty());
  EXPECT_NO_THROW(validate_exclude_list(p));
}

TEST(DensePlan, GgufRowMultipleOf64KeepsWhatLlamaCppCannotBlock) {
  // --format gguf: llama.cpp's NVFP4 blocks hold 64 weights. K = 96 (a multiple of 16 but not of
  // 64) is kept with the reason; K = 64 is still quantized.
  PlanOptions o;
  o.k_multiple = 64;
  o.k_multiple_why = " (gguf)";
  Plan p = build_plan_from_tensors(llama_tensors(96, false).sorted(), config_of(kLlamaConfig), o);
  const PlanEntry& d = ENTRY(p, "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(d.action, Action::Keep);
  EXPECT_EQ(d.reason, "K=96 not a multiple of 64 (gguf)");
  EXPECT_TRUE(any_contains(p.warnings, "model.layers.0.mlp.down_proj"));
  EXPECT_EQ(ENTRY(p, "model.layers.0.mlp.gate_proj").action, Action::Quantize);
  // The same tensors with the default (16) quantize down_proj.
  Plan q = build_plan_from_tensors(llama_tensors(96, false).sorted(), config_of(kLlamaConfig), {});
  EXPECT_EQ(ENTRY(q, "model.layers.0.mlp.down_proj").action, Action::Quantize);
}

TEST(DensePlan, KNotMultipleOf16IsKeptReportedAndExcluded) {
  // stories260K: intermediate 172, so down_proj has K = 172; tied embeddings (no lm_head).
  Plan p = build_plan_from_tensors(llama_tensors(172, false).sorted(), config_of(kLlamaConfig), {});
  for (int l = 0; l < 2; ++l) {
    std::string down = "model.layers." + std::to_string(l) + ".mlp.down_proj";
    const PlanEntry& d = ENTRY(p, down + ".weight");
    EXPECT_EQ(d.action, Action::Keep);
    EXPECT_EQ(d.reason, "K=172 not a multiple of 16");
    EXPECT_TRUE(any_contains(p.warnings, down)) << down;
    EXPECT_TRUE(contains(p.exclude_modules, down));
    // gate/up (K = 64) are still quantized.
    EXPECT_EQ(ENTRY(p, "model.layers." + std::to_string(l) + ".mlp.gate_proj").action,
              Action::Quantize);
  }
  EXPECT_EQ(p.exclude_modules,
            (std::vector<std::string>{"lm_head", "model.embed_tokens",
                                      "model.layers.0.mlp.down_proj",
                                      "model.layers.1.mlp.down_proj"}));
}

TEST(DensePlan, MistralAndQwen3UseTheSameNames) {
  for (const char* type : {"mistral", "qwen3"}) {
    Tensors t;
    t.add("model.embed_tokens.weight", {256, 64});
    add_attention(t, "model.layers.0.", false, std::string(type) == "qwen3");
    add_dense_mlp(t, "model.layers.0.");
    Plan p = build_plan_from_tensors(
        t.sorted(), config_of(std::string(R"({"model_type":")") + type + R"("})"), {});
    EXPECT_EQ(p.family, type);
    EXPECT_EQ(count_action(p, Action::Quantize), 7u) << type;
    if (std::string(type) == "qwen3") {
      EXPECT_EQ(ENTRY(p, "model.layers.0.self_attn.q_norm.weight").action, Action::Keep);
      EXPECT_EQ(ENTRY(p, "model.layers.0.self_attn.q_norm.weight").role, Role::Norm);
    }
  }
}

TEST(DensePlan, Qwen2BiasesAreKeptBesideTheirQuantizedWeights) {
  Tensors t;
  t.add("model.embed_tokens.weight", {256, 64});
  add_attention(t, "model.layers.0.", true);
  add_dense_mlp(t, "model.layers.0.");
  Plan p = build_plan_from_tensors(t.sorted(), config_of(R"({"model_type":"qwen2"})"), {});
  EXPECT_EQ(p.family, "qwen2");
  const PlanEntry& b = ENTRY(p, "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(b.action, Action::Keep);
  EXPECT_EQ(b.role, Role::Bias);
  EXPECT_EQ(ENTRY(p, "model.layers.0.self_attn.q_proj").action, Action::Quantize);
  // Biases are not modules: they never appear in the exclude list.
  EXPECT_FALSE(any_contains(p.exclude_modules, "bias"));
}

TEST(DensePlan, ArchitecturesNullOrMissingStillPlans) {
  // Fine-tuned checkpoint: architectures null, model_type present -> the llama table.
  Plan p = build_plan_from_tensors(llama_tensors(128, true).sorted(),
                                   config_of(R"({"model_type":"llama","architectures":null})"), {});
  EXPECT_EQ(p.family, "llama");
  // Only the architectures list: the family comes from it.
  Plan a = build_plan_from_tensors(llama_tensors(128, true).sorted(),
                                   config_of(R"({"architectures":["LlamaForCausalLM"]})"), {});
  EXPECT_EQ(a.family, "llama");
  // Nothing at all: generic fallback, still the same linears quantized, and a warning.
  Plan g = build_plan_from_tensors(llama_tensors(128, true).sorted(), config_of("{}"), {});
  EXPECT_EQ(g.family, "generic");
  EXPECT_EQ(count_action(g, Action::Quantize), 14u);
  EXPECT_TRUE(any_contains(g.warnings, "generic"));
}

TEST(DensePlan, UnknownFamilyFallsBackToGenericByNameAndShape) {
  Tensors t;
  t.add("transformer.wte.weight", {256, 64});
  t.add("transformer.ln_f.weight", {64});
  t.add("transformer.h.0.attn.wq.weight", {64, 64});
  t.add("transformer.h.0.attn.out_proj.weight", {64, 64});
  t.add("transformer.h.0.mlp.fc1.weight", {128, 64});
  t.add("transformer.h.0.mlp.fc2.weight", {64, 128});
  t.add("transformer.h.0.mlp.fc2.bias", {64});
  t.add("transformer.h.0.attn.rotary.inv_freq", {32}, DType::F32);
  t.add("transformer.h.0.mlp.c_fc.weight", {64, 128});  // GPT-2 Conv1D [K, N]: not recognised
  t.add("transformer.h.0.mixer.conv1d.weight", {128, 1, 4});  // Mamba: kept, listed
  Plan p = build_plan_from_tensors(t.sorted(),
                                   config_of(R"({"model_type":"foo_lm","architectures":["FooLM"]})"),
                                   {});
  EXPECT_EQ(p.family, "generic");
  EXPECT_TRUE(any_contains(p.warnings, "foo_lm"));
  for (const char* m : {"transformer.h.0.attn.wq", "transformer.h.0.attn.out_proj",
                        "transformer.h.0.mlp.fc1", "transformer.h.0.mlp.fc2"}) {
    const PlanEntry& e = ENTRY(p, m);
    EXPECT_EQ(e.action, Action::Quantize) << m;
    EXPECT_EQ(e.role, Role::OtherLinear) << m;
    EXPECT_NE(e.reason.find("generic"), std::string::npos) << e.reason;
    EXPECT_GE(e.input_group, 0);
  }
  EXPECT_EQ(ENTRY(p, "transformer.h.0.mlp.c_fc.weight").action, Action::Keep);
  // Kept 2-D weights and embeddings are listed for the loader; norms, biases, buffers are not.
  EXPECT_EQ(p.exclude_modules,
            (std::vector<std::string>{"lm_head", "transformer.h.0.mixer.conv1d",
                                      "transformer.h.0.mlp.c_fc", "transformer.wte"}));
  EXPECT_EQ(ENTRY(p, "transformer.wte.weight").role, Role::Embedding);
  EXPECT_EQ(ENTRY(p, "transformer.ln_f.weight").role, Role::Norm);
  EXPECT_EQ(ENTRY(p, "transformer.h.0.mlp.fc2.bias").action, Action::Keep);
}

TEST(DensePlan, LinearOutsideTheTableOfAKnownFamilyIsKeptWithAWarning) {
  Tensors t = llama_tensors(128, true);
  t.add("model.layers.0.mlp.extra_proj.weight", {64, 64});
  Plan p = build_plan_from_tensors(t.sorted(), config_of(kLlamaConfig), {});
  const PlanEntry& e = ENTRY(p, "model.layers.0.mlp.extra_proj.weight");
  EXPECT_EQ(e.action, Action::Keep);
  EXPECT_NE(e.reason.find("not in the llama table"), std::string::npos);
  EXPECT_TRUE(any_contains(p.warnings, "model.layers.0.mlp.extra_proj"));
  EXPECT_TRUE(contains(p.exclude_modules, "model.layers.0.mlp.extra_proj"));
  // ... and an --include quantizes it.
  PlanOptions o;
  o.rules.push_back(include("*.extra_proj"));
  Plan q = build_plan_from_tensors(t.sorted(), config_of(kLlamaConfig), o);
  EXPECT_EQ(ENTRY(q, "model.layers.0.mlp.extra_proj").action, Action::Quantize);
}

TEST(DensePlan, NonFloatSourceIsNotQuantized) {
  Tensors t;
  t.add("model.layers.0.self_attn.o_proj.weight", {64, 64}, DType::I8);
  Plan p = build_plan_from_tensors(t.sorted(), config_of(kLlamaConfig), {});
  EXPECT_EQ(ENTRY(p, "model.layers.0.self_attn.o_proj.weight").action, Action::Keep);
  EXPECT_TRUE(any_contains(p.warnings, "I8"));
}

TEST(DensePlan, Fp8BlockScalesAreDroppedWhenTheirWeightIsQuantized) {
  Tensors t;
  t.add("model.layers.0.self_attn.o_proj.weight", {256, 256}, DType::F8_E4M3);
  t.add("model.layers.0.self_attn.o_proj.weight_scale_inv", {2, 2}, DType::F32);
  t.add("lm_head.weight", {256, 256}, DType::F8_E4M3);
  t.add("lm_head.weight_scale_inv", {2, 2}, DType::F32);
  Plan p = build_plan_from_tensors(t.sorted(), config_of(kLlamaConfig), {});
  const PlanEntry& o = ENTRY(p, "model.layers.0.self_attn.o_proj");
  EXPECT_EQ(o.action, Action::Quantize);
  EXPECT_EQ(o.source_dtype, DType::F8_E4M3);
  EXPECT_EQ(o.source_scales, "model.layers.0.self_attn.o_proj.weight_scale_inv");
  EXPECT_EQ(ENTRY(p, "model.layers.0.self_attn.o_proj.weight_scale_inv").action, Action::Drop);
  EXPECT_EQ(o.encoding, SourceEncoding::Fp8Block);
  // A kept FP8 weight is written dequantized to BF16 (issue 8): raw FP8 codes without their
  // scales would load as wrong values, so its scale tensor goes too.
  EXPECT_EQ(ENTRY(p, "lm_head.weight").action, Action::Dequantize);
  EXPECT_EQ(ENTRY(p, "lm_head.weight").encoding, SourceEncoding::Fp8Block);
  EXPECT_EQ(ENTRY(p, "lm_head.weight").source_scales, "lm_head.weight_scale_inv");
  EXPECT_EQ(ENTRY(p, "lm_head.weight_scale_inv").action, Action::Drop);
  EXPECT_EQ(planned_output_bytes(ENTRY(p, "lm_head.weight")), 256u * 256u * 2u);
}

TEST(DensePlan, Fp8WeightWithoutScalesOrWithAWrongGridIsAnError) {
  Tensors t;
  t.add("model.layers.0.self_attn.o_proj.weight", {256, 256}, DType::F8_E4M3);
  t.add("model.layers.0.self_attn.q_proj.weight", {256, 300}, DType::F8_E4M3);
  t.add("model.layers.0.self_attn.q_proj.weight_scale_inv", {2, 2}, DType::F32);
  try {
    build_plan_from_tensors(t.sorted(), config_of(kLlamaConfig), {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.layers.0.self_attn.o_proj.weight [256,256]: F8_E4M3 weight without"),
              std::string::npos) << msg;
    EXPECT_NE(msg.find("q_proj.weight_scale_inv [2,2]: shape should be [2,3]"), std::string::npos)
        << msg;
  }
}

}  // namespace
}  // namespace fp4kit
