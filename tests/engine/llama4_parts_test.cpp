// Llama-4's pieces of the engine, against values worked from transformers' modeling_llama4.py and
// configuration_llama4.py: the complex-number RoPE (pairs (2i, 2i+1)), chunked causal attention,
// the NoPE layers' attention temperature, the split gate/up SiLU-GLU of the BMM experts, and the
// per-layer flavours ModelSpec derives from the config (no_rope_layers, layer_types, moe_layers,
// the multimodal wrapper's language_model. names).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <fstream>
#include <string>
#include <vector>

#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/model_spec.hpp"
#include "fp4kit/engine/rope.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

TEST(Llama4Parts, RopeRotatesAdjacentPairsAsComplexNumbers) {
  engine::RopeParams p;
  p.theta = 10000.0;
  p.rotary_dim = 4;
  const engine::Rope rope(p);
  // inv_freq = 1 / 10000^(2i / 4) = {1, 0.01}; position 2: angles 2 and 0.02.
  float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  rope.apply_interleaved(x, 1, 4, 2);
  const std::complex<double> a = std::complex<double>(1, 2) * std::polar(1.0, 2.0);
  const std::complex<double> b = std::complex<double>(3, 4) * std::polar(1.0, 0.02);
  EXPECT_NEAR(x[0], a.real(), 1e-6);
  EXPECT_NEAR(x[1], a.imag(), 1e-6);
  EXPECT_NEAR(x[2], b.real(), 1e-6);
  EXPECT_NEAR(x[3], b.imag(), 1e-6);
  // Not the rotate_half pairing (0, 2), (1, 3) of the other families.
  float y[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  rope.apply(y, 1, 4, 2);
  EXPECT_GT(std::fabs(y[0] - x[0]), 0.1f);
  // Position 0 leaves the vector alone.
  float z[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  rope.apply_interleaved(z, 1, 4, 0);
  EXPECT_EQ(z[0], 1.0f);
  EXPECT_EQ(z[3], 4.0f);
}

TEST(Llama4Parts, ChunkedAttentionSeesOnlyItsOwnChunk) {
  // Equal scores (q = k = 0): each query averages the values of the keys it may see.
  // chunk 2: query 0 sees {0}, 1 {0, 1}, 2 {2}, 3 {2, 3}, 4 {4}.
  const float q[5] = {0, 0, 0, 0, 0}, k[5] = {0, 0, 0, 0, 0}, v[5] = {1, 2, 4, 8, 16};
  float out[5];
  engine::causal_attention(q, 1, k, v, 1, 5, 1, 1, 1, 1.0f, 0, out, 1, nullptr, 2);
  const float want[5] = {1.0f, 1.5f, 4.0f, 6.0f, 16.0f};
  for (int i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(out[i], want[i]) << i;
  // chunk 0: plain causal (query 4 averages all five).
  engine::causal_attention(q, 1, k, v, 1, 5, 1, 1, 1, 1.0f, 0, out, 1, nullptr, 0);
  EXPECT_FLOAT_EQ(out[4], 31.0f / 5.0f);
}

TEST(Llama4Parts, AttentionTemperatureStepsEveryFloorScalePositions) {
  // log1p(floor((pos + 1) / 8192)) * 0.1 + 1: 1 up to position 8190, 1 + 0.1 ln 2 from 8191,
  // 1 + 0.1 ln 3 from 16383.
  EXPECT_FLOAT_EQ(engine::llama4_attn_temperature(0, 8192.0f, 0.1f), 1.0f);
  EXPECT_FLOAT_EQ(engine::llama4_attn_temperature(8190, 8192.0f, 0.1f), 1.0f);
  EXPECT_FLOAT_EQ(engine::llama4_attn_temperature(8191, 8192.0f, 0.1f), 1.0f + 0.1f * std::log(2.0f));
  EXPECT_FLOAT_EQ(engine::llama4_attn_temperature(16382, 8192.0f, 0.1f),
                  1.0f + 0.1f * std::log(2.0f));
  EXPECT_FLOAT_EQ(engine::llama4_attn_temperature(16383, 8192.0f, 0.1f),
                  1.0f + 0.1f * std::log(3.0f));
  EXPECT_FLOAT_EQ(engine::llama4_attn_temperature(7, 4.0f, 0.5f), 1.0f + 0.5f * std::log(3.0f));
}

TEST(Llama4Parts, SplitGluTakesGateFromTheFirstHalf) {
  // gate_up row [g0, g1, u0, u1] = [1, -2, 3, 0.5]: silu(1) * 3, silu(-2) * 0.5.
  const float gu[4] = {1.0f, -2.0f, 3.0f, 0.5f};
  float out[2];
  engine::silu_glu_split(gu, 1, 2, out);
  EXPECT_NEAR(out[0], 3.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(out[1], 0.5 * -2.0 / (1.0 + std::exp(2.0)), 1e-6);
}

// A Llama-4 checkpoint of zeros: hidden 16, 2 heads of 8 (1 KV head), 2 experts of I 8, dense
// MLP 24, vocab 8. `root` "" (Llama4ForCausalLM) or "language_model." (the wrapper).
void write_llama4(const std::filesystem::path& dir, const std::string& root, int layers,
                  const std::vector<int>& moe, bool lm_head, const std::string& config) {
  std::vector<TensorSpec> specs;
  auto add = [&](const std::string& n, std::vector<uint64_t> shape) {
    specs.push_back({n, DType::F32, std::move(shape)});
  };
  add(root + "model.embed_tokens.weight", {8, 16});
  add(root + "model.norm.weight", {16});
  if (lm_head) add(root + "lm_head.weight", {8, 16});
  for (int l = 0; l < layers; ++l) {
    const std::string p = root + "model.layers." + std::to_string(l) + ".";
    add(p + "self_attn.q_proj.weight", {16, 16});
    add(p + "self_attn.k_proj.weight", {8, 16});
    add(p + "self_attn.v_proj.weight", {8, 16});
    add(p + "self_attn.o_proj.weight", {16, 16});
    if (std::find(moe.begin(), moe.end(), l) != moe.end()) {
      add(p + "feed_forward.router.weight", {2, 16});
      add(p + "feed_forward.experts.gate_up_proj", {2, 16, 16});
      add(p + "feed_forward.experts.down_proj", {2, 8, 16});
      add(p + "feed_forward.shared_expert.gate_proj.weight", {8, 16});
      add(p + "feed_forward.shared_expert.up_proj.weight", {8, 16});
      add(p + "feed_forward.shared_expert.down_proj.weight", {16, 8});
    } else {
      add(p + "feed_forward.gate_proj.weight", {24, 16});
      add(p + "feed_forward.up_proj.weight", {24, 16});
      add(p + "feed_forward.down_proj.weight", {16, 24});
    }
  }
  CheckpointWriter w(dir, specs);
  for (const auto& s : specs) w.write(s.name, std::vector<uint8_t>(s.nbytes(), 0));
  w.finish();
  std::ofstream(dir / "config.json") << config;
}

const char* kText =
    R"("hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
       "vocab_size": 8, "intermediate_size": 8, "intermediate_size_mlp": 24,
       "num_local_experts": 2, "rms_norm_eps": 1e-5)";

TEST(Llama4Parts, SpecFollowsTheConfigDefaults) {
  testing::TempDir tmp;
  // 4 layers, interleave_moe_layer_step 2 -> MoE layers 1, 3; no_rope_layer_interval 4 (default)
  // -> layer 3 NoPE; layer_types absent -> chunked on RoPE layers, full on the NoPE layer.
  write_llama4(tmp.path(), "", 4, {1, 3}, true,
               std::string(R"({"model_type": "llama4_text", "num_hidden_layers": 4,
                   "interleave_moe_layer_step": 2, "attention_chunk_size": 8, )") + kText + "}");
  auto c = Checkpoint::open(tmp.path());
  const auto s = engine::ModelSpec::from_checkpoint(*c);
  EXPECT_EQ(s.family, engine::Family::Llama4);
  EXPECT_TRUE(s.rope_interleaved);
  EXPECT_EQ(s.rope.theta, 500000.0);  // Llama4TextConfig's default
  EXPECT_EQ(s.top_k, 1);              // its default num_experts_per_tok
  EXPECT_EQ(s.routing, engine::Routing::TopkSigmoidScaledInput);
  EXPECT_FLOAT_EQ(s.floor_scale, 8192.0f);
  EXPECT_FLOAT_EQ(s.attn_scale, 0.1f);
  EXPECT_FALSE(s.lm_head_tied);
  EXPECT_EQ(s.lm_head.module, "lm_head");
  ASSERT_EQ(s.layers.size(), 4u);
  for (int l = 0; l < 4; ++l) {
    const auto& L = s.layers[static_cast<size_t>(l)];
    const bool nope = l == 3;
    EXPECT_EQ(L.rope, !nope) << l;
    EXPECT_EQ(L.l2_qk_norm, !nope) << l;  // use_qk_norm defaults to true, RoPE layers only
    EXPECT_EQ(L.temperature_tuning, nope) << l;
    EXPECT_EQ(L.attention_chunk, nope ? 0 : 8) << l;
    EXPECT_EQ(L.moe, l % 2 == 1) << l;
  }
  const auto& M = s.layers[1];
  EXPECT_TRUE(M.bmm_experts);
  EXPECT_FALSE(M.bmm_interleaved);
  EXPECT_EQ(M.router, "model.layers.1.feed_forward.router");
  EXPECT_EQ(M.bmm_gate_up.module, "model.layers.1.feed_forward.experts.gate_up_proj");
  EXPECT_EQ(M.bmm_gate_up.n, 16u);  // 2I
  EXPECT_EQ(M.bmm_gate_up.k, 16u);  // H
  EXPECT_EQ(M.bmm_down.n, 16u);
  EXPECT_EQ(M.bmm_down.k, 8u);
  ASSERT_EQ(M.experts.size(), 2u);
  EXPECT_EQ(M.experts[1].prefix, "model.layers.1.feed_forward.experts.1");
  EXPECT_TRUE(M.has_shared_expert);
  EXPECT_TRUE(M.shared_expert_gate.empty());
  EXPECT_EQ(M.shared_gate.module, "model.layers.1.feed_forward.shared_expert.gate_proj");
  EXPECT_EQ(s.layers[0].gate.module, "model.layers.0.feed_forward.gate_proj");
  EXPECT_EQ(s.layers[0].gate.rows, 24u);  // intermediate_size_mlp
}

TEST(Llama4Parts, SpecOfTheWrapperReadsLanguageModelNamesAndExplicitLists) {
  testing::TempDir tmp;
  // Explicit no_rope_layers / layer_types / moe_layers override the defaults; no lm_head tensor:
  // tied to language_model.model.embed_tokens.
  write_llama4(tmp.path(), "language_model.", 3, {0}, false,
               std::string(R"({"model_type": "llama4", "architectures":
                   ["Llama4ForConditionalGeneration"], "text_config": {"model_type": "llama4_text",
                   "num_hidden_layers": 3, "no_rope_layers": [0, 1, 1], "moe_layers": [0],
                   "layer_types": ["full_attention", "full_attention", "chunked_attention"],
                   "attention_chunk_size": 4, "use_qk_norm": false,
                   "attn_temperature_tuning": false, "floor_scale": 4, "attn_scale": 0.5,
                   "num_experts_per_tok": 2, "rope_parameters": {"rope_type": "llama3",
                   "rope_theta": 1000.0, "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 16}, )") +
                   kText + "}}");
  auto c = Checkpoint::open(tmp.path());
  const auto s = engine::ModelSpec::from_checkpoint(*c);
  EXPECT_EQ(s.family, engine::Family::Llama4);
  EXPECT_EQ(s.embed, "language_model.model.embed_tokens.weight");
  EXPECT_EQ(s.final_norm, "language_model.model.norm.weight");
  EXPECT_TRUE(s.lm_head_tied);
  EXPECT_EQ(s.lm_head.module, "language_model.model.embed_tokens");
  EXPECT_EQ(s.top_k, 2);
  EXPECT_EQ(s.rope.type, "llama3");
  EXPECT_EQ(s.rope.theta, 1000.0);
  EXPECT_FLOAT_EQ(s.floor_scale, 4.0f);
  EXPECT_FLOAT_EQ(s.attn_scale, 0.5f);
  ASSERT_EQ(s.layers.size(), 3u);
  EXPECT_EQ(s.layers[0].prefix, "language_model.model.layers.0.");
  EXPECT_FALSE(s.layers[0].rope);
  EXPECT_FALSE(s.layers[0].temperature_tuning);  // attn_temperature_tuning false
  EXPECT_TRUE(s.layers[1].rope);
  EXPECT_FALSE(s.layers[1].l2_qk_norm);  // use_qk_norm false
  EXPECT_EQ(s.layers[1].attention_chunk, 0);
  EXPECT_EQ(s.layers[2].attention_chunk, 4);
  EXPECT_TRUE(s.layers[0].moe);
  EXPECT_FALSE(s.layers[1].moe);
  EXPECT_EQ(s.layers[0].bmm_down.module,
            "language_model.model.layers.0.feed_forward.experts.down_proj");
}

TEST(Llama4Parts, ChunkedLayerWithoutChunkSizeIsAnError) {
  testing::TempDir tmp;
  write_llama4(tmp.path(), "", 1, {}, true,
               std::string(R"({"model_type": "llama4_text", "num_hidden_layers": 1,
                   "attention_chunk_size": null, )") + kText + "}");
  auto c = Checkpoint::open(tmp.path());
  try {
    engine::ModelSpec::from_checkpoint(*c);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention_chunk_size"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fp4kit
