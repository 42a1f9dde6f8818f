// Calibration statistics on the real stories260K checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "fp4kit/engine/act_quant.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/engine/stats_collector.hpp"
#include "fp4kit/engine/token_windows.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

std::vector<std::vector<int32_t>> samples(const std::filesystem::path& data, size_t n, size_t len) {
  const auto ids = engine::read_token_ids(data);
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < n; ++i)
    out.emplace_back(ids.begin() + static_cast<ptrdiff_t>(i * len),
                     ids.begin() + static_cast<ptrdiff_t>((i + 1) * len));
  return out;
}

ActivationStats calibrate(const std::filesystem::path& model,
                          const std::vector<std::vector<int32_t>>& seqs, bool all_experts) {
  auto ckpt = Checkpoint::open(model);
  engine::Engine eng(*ckpt);
  engine::StatsCollector c;
  engine::ForwardOptions o;
  o.all_experts = all_experts;
  o.chunk_tokens = 700;  // several blocks, not aligned to sequences
  eng.run(seqs, o, &c, {});
  return c.result();
}

TEST(Stats, RoutedMixtralTop2CountsSumToTwiceTheTokens) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto seqs = samples(data, 8, 200);
  const int64_t T = 8 * 200;
  for (bool all : {false, true}) {
    const auto st = calibrate(model, seqs, all);
    ASSERT_EQ(st.routed_tokens.size(), 5u * 4u);
    for (int l = 0; l < 5; ++l) {
      int64_t sum = 0;
      int busy = 0;
      for (int e = 0; e < 4; ++e) {
        const std::string p = "model.layers." + std::to_string(l) + ".block_sparse_moe.experts." +
                              std::to_string(e);
        const int64_t routed = st.routed_tokens.at(p);
        sum += routed;
        busy += routed > 0;
        // Without --all-experts an expert's linears saw exactly its routed tokens; with it, all.
        EXPECT_EQ(st.token_count.at(p + ".w1"), all ? T : routed) << p;
        EXPECT_EQ(st.token_count.at(p + ".w2"), all ? T : routed) << p;
        EXPECT_GT(st.input_amax.at(p + ".w1"), 0.0f);
        EXPECT_EQ(st.input_amax.at(p + ".w1"), st.input_amax.at(p + ".w3"));  // same input
      }
      EXPECT_EQ(sum, 2 * T) << "layer " << l;
      EXPECT_EQ(busy, 4);
    }
    for (const auto& [m, a] : st.input_amax) {
      EXPECT_GT(a, 0.0f) << m;
      EXPECT_TRUE(std::isfinite(a)) << m;
    }
  }
}

// Layer 0's q_proj input is rmsnorm(embedding) * input_layernorm: recomputed here in double from
// the raw tensors, independently of the engine.
TEST(Stats, Layer0AmaxAndSquareSumsMatchADirectComputation) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto seqs = samples(data, 4, 128);
  const auto st = calibrate(model, seqs, false);
  auto ckpt = Checkpoint::open(model);
  const size_t H = 64;
  std::vector<float> emb(512 * H), ln(H);
  decode_to_f32(ckpt->bytes("model.embed_tokens.weight").data(), DType::BF16, emb.size(), emb.data());
  decode_to_f32(ckpt->bytes("model.layers.0.input_layernorm.weight").data(), DType::BF16, H, ln.data());
  double amax = 0;
  std::vector<double> sq(H, 0.0);
  for (const auto& s : seqs)
    for (int32_t id : s) {
      double ms = 0;
      for (size_t c = 0; c < H; ++c) ms += double(emb[id * H + c]) * emb[id * H + c];
      const double inv = 1.0 / std::sqrt(ms / H + 1e-5);
      for (size_t c = 0; c < H; ++c) {
        const double x = emb[id * H + c] * inv * ln[c];
        amax = std::max(amax, std::fabs(x));
        sq[c] += x * x;
      }
    }
  for (const char* m : {"q_proj", "k_proj", "v_proj"}) {
    const std::string name = std::string("model.layers.0.self_attn.") + m;
    EXPECT_NEAR(st.input_amax.at(name), amax, 1e-5 * amax) << name;
    EXPECT_EQ(st.token_count.at(name), 512);
    for (size_t c = 0; c < H; ++c) EXPECT_NEAR(st.input_sq_sum.at(name)[c], sq[c], 1e-5 * sq[c]);
  }
  EXPECT_EQ(st.input_amax.size(), 35u);  // 7 linears x 5 layers, lm_head not recorded
}

// calibrate --hessian raw: the 16x16 diagonal blocks of X^T X of layer 0's q/k/v input (the
// RMS-normed embeddings) against a float64 recomputation; their diagonal is the per-channel sum
// of squares the file already had.
TEST(Stats, Layer0HessianBlocksMatchADirectComputation) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto seqs = samples(data, 2, 128);
  auto ckpt = Checkpoint::open(model);
  engine::Engine eng(*ckpt);
  engine::StatsCollector c;
  c.collect_hessian({});
  engine::ForwardOptions o;
  o.chunk_tokens = 100;
  eng.run(seqs, o, &c, {});
  const auto st = c.result();
  const size_t H = 64;
  std::vector<float> emb(512 * H), ln(H);
  decode_to_f32(ckpt->bytes("model.embed_tokens.weight").data(), DType::BF16, emb.size(), emb.data());
  decode_to_f32(ckpt->bytes("model.layers.0.input_layernorm.weight").data(), DType::BF16, H, ln.data());
  std::vector<double> want(H * 16, 0.0);
  for (const auto& s : seqs)
    for (int32_t id : s) {
      double ms = 0;
      for (size_t k = 0; k < H; ++k) ms += double(emb[id * H + k]) * emb[id * H + k];
      const double inv = 1.0 / std::sqrt(ms / H + 1e-5);
      for (size_t j = 0; j < H / 16; ++j)
        for (size_t a = 0; a < 16; ++a)
          for (size_t b = 0; b < 16; ++b)
            want[j * 256 + a * 16 + b] += (emb[id * H + 16 * j + a] * inv * ln[16 * j + a]) *
                                          (emb[id * H + 16 * j + b] * inv * ln[16 * j + b]);
    }
  for (const char* m : {"q_proj", "k_proj", "v_proj"}) {
    const std::string name = std::string("model.layers.0.self_attn.") + m;
    const auto& h = st.hessian_blocks.at(name);
    ASSERT_EQ(h.size(), H * 16) << name;
    for (size_t i = 0; i < h.size(); ++i)
      EXPECT_NEAR(h[i], want[i], 1e-5 * (std::fabs(want[i]) + 1e-3)) << name << " " << i;
    for (size_t k = 0; k < H; ++k)
      EXPECT_NEAR(h[(k / 16) * 256 + (k % 16) * 17], st.input_sq_sum.at(name)[k],
                  1e-9 * st.input_sq_sum.at(name)[k]);
  }
  EXPECT_EQ(st.hessian_blocks.size(), 30u);  // down_proj (K = 172) has none
}

// W4A4: the blocks are those of the inputs after NVFP4 activation quantization with each module's
// global scale (and of the raw inputs for a module without quantization, never mixed up).
TEST(Stats, W4A4HessianBlocksAreOfQuantizedInputs) {
  std::vector<float> x(7 * 32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i) * (1 + (i % 5));
  const std::string a = "l.q_proj", b = "l.k_proj";
  engine::StatsCollector c;
  const float gs = 448.0f * 6.0f / 5.5f;
  c.collect_hessian({{a, gs}, {b, gs}});
  c.linear_input({&a, &b}, x.data(), 7, 32);
  c.linear_input({&a, &b}, x.data(), 7, 32);
  std::vector<float> xq = x;
  engine::nvfp4_fake_quant_activations(xq.data(), 7, 32, gs);
  ASSERT_NE(xq, x);
  const auto st = c.result();
  for (const std::string* m : {&a, &b})
    for (size_t j = 0; j < 2; ++j)
      for (size_t p = 0; p < 16; ++p)
        for (size_t q = 0; q < 16; ++q) {
          double want = 0;
          for (size_t r = 0; r < 7; ++r)
            want += double(xq[r * 32 + 16 * j + p]) * xq[r * 32 + 16 * j + q];
          EXPECT_EQ(st.hessian_blocks.at(*m)[j * 256 + p * 16 + q], 2 * want) << *m;
        }
  engine::StatsCollector missing;
  missing.collect_hessian({{a, gs}});
  EXPECT_THROW(missing.linear_input({&a, &b}, x.data(), 7, 32), Error);
}

TEST(Stats, HessianFileIsVersion2AndUnknownVersionsFail) {
  testing::TempDir tmp;
  ActivationStats st;
  st.input_amax["a.q_proj"] = 2.5f;
  st.token_count["a.q_proj"] = 7;
  st.hessian_blocks["a.q_proj"] = std::vector<double>(512, 0.25);
  write_stats_file(tmp / "s.safetensors", st);
  const auto back = read_stats_file(tmp / "s.safetensors");
  EXPECT_EQ(back.metadata.at("version"), "2");
  EXPECT_EQ(back.hessian_blocks, st.hessian_blocks);
  st.hessian_blocks.clear();
  write_stats_file(tmp / "v1.safetensors", st);
  EXPECT_EQ(read_stats_file(tmp / "v1.safetensors").metadata.at("version"), "1");
  // A file from a newer fp4kit names its version instead of misreading it.
  std::vector<TensorSpec> specs{{"a.input_amax", DType::F32, {}}};
  std::filesystem::create_directories(tmp / "v9");
  {
    CheckpointWriter w(tmp / "v9", specs, ~0ull >> 1, {{"format", "fp4kit-stats"}, {"version", "9"}});
    const float v = 1.0f;
    w.write("a.input_amax", {reinterpret_cast<const uint8_t*>(&v), 4});
    w.finish();
  }
  try {
    read_stats_file(tmp / "v9" / "model.safetensors");
    ADD_FAILURE() << "version 9 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"9\""), std::string::npos) << e.what();
  }
}

// A copy of the routed Mixtral whose routers are all zero: every expert gets probability 1/4, the
// top-2 ties resolve to the lowest indices (0 and 1), so experts 2 and 3 never get a token.
void write_zero_router_copy(const Checkpoint& src, const std::filesystem::path& out) {
  std::filesystem::create_directories(out);
  std::filesystem::copy_file(src.dir() / "config.json", out / "config.json");
  std::vector<TensorSpec> specs;
  for (const auto& n : src.tensor_names()) specs.push_back({n, src.info(n).dtype, src.info(n).shape});
  CheckpointWriter w(out, specs);
  for (const auto& n : src.tensor_names()) {
    auto b = src.bytes(n);
    std::vector<uint8_t> v(b.begin(), b.end());
    if (n.find("block_sparse_moe.gate.weight") != std::string::npos) std::fill(v.begin(), v.end(), 0);
    w.write(n, v);
  }
  w.finish();
}

TEST(Stats, ExpertsWithoutTokensAndAllExperts) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  write_zero_router_copy(*Checkpoint::open(model), tmp / "m");
  const auto seqs = samples(data, 4, 100);
  const std::string e2 = "model.layers.2.block_sparse_moe.experts.2";
  const std::string e0 = "model.layers.2.block_sparse_moe.experts.0";
  const auto routed = calibrate(tmp / "m", seqs, false);
  EXPECT_EQ(routed.routed_tokens.at(e0), 400);
  EXPECT_EQ(routed.routed_tokens.at(e2), 0);
  EXPECT_EQ(routed.input_amax.count(e2 + ".w1"), 0u);  // no token, no statistics
  const auto all = calibrate(tmp / "m", seqs, true);
  EXPECT_EQ(all.routed_tokens.at(e2), 0);              // real routing still reported
  EXPECT_EQ(all.token_count.at(e2 + ".w1"), 400);      // but every token ran through it
  EXPECT_GT(all.input_amax.at(e2 + ".w2"), 0.0f);
  // The same input reaches every expert: gate/up amax equal across experts.
  EXPECT_EQ(all.input_amax.at(e2 + ".w1"), all.input_amax.at(e0 + ".w1"));
}

TEST(Stats, FileRoundTripAndRejections) {
  testing::TempDir tmp;
  ActivationStats st;
  st.input_amax["a.q_proj"] = 2.5f;
  st.input_sq_sum["a.q_proj"] = {1.0, 2.0, 3.0};
  st.token_count["a.q_proj"] = 7;
  st.routed_tokens["a.experts.0"] = 0;
  st.metadata["source"] = "x";
  write_stats_file(tmp / "s.safetensors", st);
  const auto back = read_stats_file(tmp / "s.safetensors");
  EXPECT_EQ(back.input_amax, st.input_amax);
  EXPECT_EQ(back.input_sq_sum, st.input_sq_sum);
  EXPECT_EQ(back.token_count, st.token_count);
  EXPECT_EQ(back.routed_tokens, st.routed_tokens);
  EXPECT_EQ(back.metadata.at("format"), "fp4kit-stats");
  EXPECT_EQ(back.metadata.at("source"), "x");
  EXPECT_FALSE(std::filesystem::exists(tmp / "s.safetensors.partial"));
  ActivationStats bad = st;
  bad.input_amax["b"] = std::nanf("");
  EXPECT_THROW(write_stats_file(tmp / "t.safetensors", bad), Error);
  EXPECT_THROW(read_stats_file(tmp / "missing.safetensors"), Error);
}

}  // namespace
}  // namespace fp4kit
