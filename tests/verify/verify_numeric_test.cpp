// verify --source: every quantized tensor dequantized and compared with the source.
#include <gtest/gtest.h>

#include <cmath>

#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/verify/numeric_checks.hpp"
#include "fp4kit/verify/verify.hpp"
#include "verify/verify_helpers.hpp"

namespace fp4kit::testing {
namespace {

using verify::Finding;

const std::string kExpert = "model.layers.0.mlp.experts.1";

struct SourceAndOut {
  TempDir dir;
  std::map<std::string, FloatTensor> src = make_moe_source();
  verify::VerifyReport verify(const MemCheckpoint& m, bool fused_source = false) {
    const auto s = dir / (fused_source ? "src-fused" : "src");
    if (!std::filesystem::exists(s)) write_source(s, fused_source ? fuse_experts(src) : src);
    const auto o = dir / "out";
    std::filesystem::remove_all(o);
    m.write(o);
    verify::VerifyOptions opt;
    opt.source = s;
    return verify::verify_checkpoint(o, opt);
  }
};

TEST(VerifyNumeric, GoodCheckpointMatchesSource) {
  SourceAndOut t;
  for (Format f : {Format::ModelOpt, Format::CompressedTensors}) {
    BuildOptions o;
    o.format = f;
    const auto r = t.verify(build_nvfp4(t.src, o));
    EXPECT_TRUE(r.ok()) << dump_findings(r);
    EXPECT_EQ(r.count(Finding::Warning), 0u) << dump_findings(r);
    ASSERT_TRUE(r.numeric);
    ASSERT_EQ(r.tensor_errors.size(), 32u);
    for (const auto& e : r.tensor_errors) {
      // Gaussian weights: NVFP4 rounding gives roughly 10% relative RMSE, never exact, never a
      // sign flip (round-to-nearest keeps the sign).
      EXPECT_GT(e.rel_rmse, 0.05) << e.module;
      EXPECT_LT(e.rel_rmse, 0.15) << e.module;
      EXPECT_NEAR(e.sqnr_db, -20 * std::log10(e.rel_rmse), 1e-6) << e.module;
      EXPECT_EQ(e.sign_flips, 0u) << e.module;
      EXPECT_EQ(e.count, e.rows * e.cols);
    }
  }
}

// Searched block scales (quantize --scales mse) are not max-based: verify accepts them without a
// warning and still catches what it catches on max-based ones.
TEST(VerifyNumeric, SearchedScalesPassAndBreakageIsStillCaught) {
  SourceAndOut t;
  BuildOptions o;
  o.searched_scales = true;
  const auto good = build_nvfp4(t.src, o);
  ASSERT_NE(good.tensors.at(kExpert + ".down_proj.weight_scale").bytes,
            build_nvfp4(t.src).tensors.at(kExpert + ".down_proj.weight_scale").bytes);
  const auto r = t.verify(good);
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_EQ(r.count(Finding::Warning), 0u) << dump_findings(r);
  auto nibbles = good;
  for (auto& b : nibbles.at(kExpert + ".down_proj.weight").bytes)
    b = static_cast<uint8_t>((b << 4) | (b >> 4));
  EXPECT_FINDING(t.verify(nibbles), Error, "numeric.error", kExpert + ".down_proj");
  auto s2 = good;
  const std::string n = kExpert + ".down_proj.weight_scale_2";
  s2.set_f32(n, 4 * s2.get_f32(n));
  EXPECT_FINDING(t.verify(s2), Error, "numeric.error", kExpert + ".down_proj");
  auto swapped = t.src;
  std::swap(swapped.at(kExpert + ".gate_proj.weight"), swapped.at(kExpert + ".up_proj.weight"));
  EXPECT_FINDING(t.verify(build_nvfp4(swapped, o)), Error, "numeric.error", kExpert + ".gate_proj");
}

TEST(VerifyNumeric, FusedExpertSourceIsSplitLikeTheOutput) {
  SourceAndOut t;
  const auto r = t.verify(build_nvfp4(t.src), /*fused_source=*/true);
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_EQ(r.count(Finding::Warning), 0u) << dump_findings(r);
  EXPECT_EQ(r.tensor_errors.size(), 32u);
}

// A splitter that took gate from rows [I, 2I) and up from [0, I): consistent scales, wrong data.
MemCheckpoint gate_up_swapped(const std::map<std::string, FloatTensor>& src) {
  auto swapped = src;
  std::swap(swapped.at(kExpert + ".gate_proj.weight"), swapped.at(kExpert + ".up_proj.weight"));
  return build_nvfp4(swapped);
}

TEST(VerifyNumeric, GateUpSwappedIsCaught) {
  for (bool fused : {false, true}) {
    SourceAndOut t;
    const auto r = t.verify(gate_up_swapped(t.src), fused);
    EXPECT_FINDING(r, Error, "numeric.error", kExpert + ".gate_proj");
    EXPECT_FINDING(r, Error, "numeric.error", kExpert + ".up_proj");
    EXPECT_EQ(r.count(Finding::Error), 2u) << dump_findings(r);
  }
}

TEST(VerifyNumeric, SwappedNibblesAreCaught) {
  SourceAndOut t;
  auto m = build_nvfp4(t.src);
  for (auto& b : m.at(kExpert + ".down_proj.weight").bytes) b = static_cast<uint8_t>((b << 4) | (b >> 4));
  const auto r = t.verify(m);
  EXPECT_FINDING(r, Error, "numeric.error", kExpert + ".down_proj");
  EXPECT_FINDING(r, Warning, "numeric.sign_flips", kExpert + ".down_proj");
  EXPECT_EQ(r.count(Finding::Error), 1u) << dump_findings(r);
}

TEST(VerifyNumeric, WrongGlobalScaleIsCaught) {
  SourceAndOut t;
  auto m = build_nvfp4(t.src);
  const std::string s2 = kExpert + ".down_proj.weight_scale_2";  // down_proj is not fused
  m.set_f32(s2, 4 * m.get_f32(s2));
  const auto r = t.verify(m);
  EXPECT_FINDING(r, Error, "numeric.error", kExpert + ".down_proj");
  EXPECT_EQ(r.count(Finding::Error), 1u) << dump_findings(r);
  // Structurally the checkpoint is fine: only the comparison with the source sees it.
  EXPECT_TRUE(verify_mem(m).ok());
}

TEST(VerifyNumeric, TinyGroupMemberDestroyedBySharedScaleIsCaught) {
  // Like stories260k-qwen3moe: q/k scaled by 2^-24 share s2 with v (spec section 3), so their block
  // scales fall to the E4M3 floor 2^-9 and the weights are lost, although every byte is a correct
  // encoding under that s2.
  SourceAndOut t;
  for (const char* m : {"q_proj", "k_proj"})
    for (auto& x : t.src.at(std::string("model.layers.1.self_attn.") + m + ".weight").data)
      x = std::ldexp(x, -24);
  const auto r = t.verify(build_nvfp4(t.src));
  EXPECT_FINDING(r, Error, "numeric.error", "model.layers.1.self_attn.q_proj");
  EXPECT_FINDING(r, Error, "numeric.error", "model.layers.1.self_attn.k_proj");
  EXPECT_FALSE(has_finding(r, Finding::Error, "numeric.error", "model.layers.1.self_attn.v_proj"));
  EXPECT_NE(dump_findings(r).find("underflow"), std::string::npos) << dump_findings(r);
  EXPECT_TRUE(verify_mem(build_nvfp4(t.src)).ok());  // structurally nothing is wrong
}

TEST(VerifyNumeric, ZeroScaleOnlyWhereSourceBlockIsZero) {
  SourceAndOut t;
  // Block (row 0, block 0) of gate_proj zero in the source; block (row 1, block 0) not.
  auto& w = t.src.at(kExpert + ".gate_proj.weight");
  for (int i = 0; i < 16; ++i) w.data[i] = 0.0f;
  auto m = build_nvfp4(t.src);
  auto& sc = m.at(kExpert + ".gate_proj.weight_scale").bytes;
  ASSERT_EQ(sc[0], 0x38);  // spec: an all-zero block gets scale 1.0
  sc[0] = 0x00;
  const uint64_t blocks_per_row = 64 / 16;
  auto ok = t.verify(m);
  EXPECT_TRUE(ok.ok()) << dump_findings(ok);
  sc[blocks_per_row] = 0x00;  // row 1, block 0: the source block is not zero
  const auto r = t.verify(m);
  EXPECT_FINDING(r, Error, "scale.zero", kExpert + ".gate_proj");
  EXPECT_NE(dump_findings(r).find("row 1, block 0"), std::string::npos) << dump_findings(r);
}

TEST(VerifyNumeric, KeptTensorsMissingOrChanged) {
  SourceAndOut t;
  auto m = build_nvfp4(t.src);
  m.erase("model.layers.1.post_attention_layernorm.weight");
  m.at("model.embed_tokens.weight").bytes[10] ^= 0x01;
  const auto r = t.verify(m);
  EXPECT_FINDING(r, Error, "keep.missing", "model.layers.1.post_attention_layernorm");
  EXPECT_FINDING(r, Warning, "keep.changed", "model.embed_tokens");
}

TEST(VerifyNumeric, ModulesWithoutComparableSourceAreListed) {
  SourceAndOut t;
  const auto out = build_nvfp4(t.src);
  t.src.erase("model.layers.0.self_attn.o_proj.weight");
  auto& q = t.src.at("model.layers.1.self_attn.q_proj.weight");
  q.shape = {32, 128};  // same values, other shape
  const auto r = t.verify(out);
  EXPECT_FINDING(r, Warning, "numeric.source", "model.layers.0.self_attn.o_proj");
  EXPECT_FINDING(r, Warning, "numeric.source", "model.layers.1.self_attn.q_proj");
  EXPECT_NE(dump_findings(r).find("[32, 128]"), std::string::npos) << dump_findings(r);
  EXPECT_EQ(r.tensor_errors.size(), 30u);
}

TEST(VerifyNumeric, ThresholdOptionIsUsed) {
  SourceAndOut t;
  const auto s = t.dir / "src";
  write_source(s, t.src);
  build_nvfp4(t.src).write(t.dir / "out");
  verify::VerifyOptions o;
  o.source = s;
  o.max_rel_rmse = 0.01;  // below what NVFP4 can reach: every tensor is flagged
  const auto r = verify::verify_checkpoint(t.dir / "out", o);
  EXPECT_EQ(r.max_rel_rmse, 0.01);
  // Each flagged tensor is re-quantized from the source: it matches the reference, so the
  // finding is a warning ("hard distribution"), not an error.
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_FINDING(r, Warning, "numeric.error", kExpert + ".down_proj");
}

}  // namespace
}  // namespace fp4kit::testing
