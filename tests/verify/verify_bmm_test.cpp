// verify on ModelOpt's 3-D BMM experts (gpt-oss, Llama-4; NVFP4-SPEC.md section 4): structural
// rules of the layout and, with --source, the expert-by-expert comparison against a BF16 or an
// MXFP4 source.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/verify/verify.hpp"
#include "verify/bmm_fixture.hpp"
#include "verify/verify_helpers.hpp"

namespace fp4kit::testing {
namespace {

using verify::Finding;

enum class Source { Bf16, Mxfp4 };
const char* source_name(Source s) { return s == Source::Bf16 ? "bf16" : "mxfp4"; }

// A gpt-oss source on disk and the values the output is built from.
struct BmmCase {
  TempDir dir;
  BmmShape shape;
  std::map<std::string, FloatTensor> values;
  explicit BmmCase(Source s, BmmShape sh = {}) : shape(sh) {
    if (s == Source::Bf16) {
      values = make_gptoss_source(shape);
      gptoss_bf16_source(values, shape).write(dir / "src");
    } else {
      make_gptoss_mxfp4_source(values, shape).write(dir / "src");
    }
  }
  void rewrite_bf16_source() {
    std::filesystem::remove_all(dir / "src");
    gptoss_bf16_source(values, shape).write(dir / "src");
  }
  MemCheckpoint good(bool w4a4 = true) const { return build_bmm_nvfp4(values, w4a4, shape); }
  verify::VerifyReport verify(const MemCheckpoint& m) {
    const auto o = dir / "out";
    std::filesystem::remove_all(o);
    m.write(o);
    verify::VerifyOptions opt;
    opt.source = dir / "src";
    return verify::verify_checkpoint(o, opt);
  }
};

std::string messages(const verify::VerifyReport& r, const std::string& check) {
  std::string s;
  for (const auto& f : r.findings)
    if (f.check == check) s += f.message + "\n";
  return s;
}

const verify::TensorErrorStats* stats_of(const verify::VerifyReport& r, const std::string& m) {
  for (const auto& t : r.tensor_errors)
    if (t.module == m) return &t;
  return nullptr;
}

// Expert e's bytes of a [E, ...] tensor.
std::vector<uint8_t>::iterator expert_begin(OutTensor& t, uint64_t e) {
  return t.bytes.begin() + static_cast<std::ptrdiff_t>(e * (t.bytes.size() / t.shape[0]));
}

TEST(VerifyBmm, CorrectOutputMatchesEitherSource) {
  for (Source s : {Source::Bf16, Source::Mxfp4}) {
    SCOPED_TRACE(source_name(s));
    BmmCase c(s);
    for (bool w4a4 : {true, false}) {
      const auto r = c.verify(c.good(w4a4));
      EXPECT_TRUE(r.ok()) << dump_findings(r);
      EXPECT_EQ(r.count(Finding::Warning), 0u) << dump_findings(r);
      EXPECT_EQ(r.modules_quantized, 2u);
      ASSERT_EQ(r.tensor_errors.size(), 2u) << dump_findings(r);
      // One row per BMM tensor: one expert's [N, K], aggregated over the E experts.
      const auto* gu = stats_of(r, kGateUp);
      const auto* dn = stats_of(r, kDown);
      ASSERT_TRUE(gu && dn);
      EXPECT_EQ(gu->rows, 2 * c.shape.inter);  // N = 2I
      EXPECT_EQ(gu->cols, c.shape.hidden);     // K = H
      EXPECT_EQ(dn->rows, c.shape.hidden);
      EXPECT_EQ(dn->cols, c.shape.inter);
      for (const auto* t : {gu, dn}) {
        EXPECT_EQ(t->experts, c.shape.experts);
        EXPECT_EQ(t->count, t->experts * t->rows * t->cols);
        // Correct round-to-nearest NVFP4: a few percent to ~10% relative RMSE (never exact for
        // these sources), well below the 0.22 threshold; never a sign flip.
        EXPECT_GT(t->rel_rmse, 0.01) << t->module;
        EXPECT_LT(t->rel_rmse, 0.15) << t->module;
        EXPECT_LT(t->worst_rel_rmse, 0.15) << t->module;
        EXPECT_GE(t->worst_expert, 0);
        EXPECT_EQ(t->sign_flips, 0u) << t->module;
      }
      // The JSON report carries the expert count and the worst expert of BMM rows.
      const auto j = r.to_json();
      for (const auto& row : j["numeric"]["tensors"]) {
        EXPECT_EQ(row["experts"], c.shape.experts);
        EXPECT_EQ(row["count"], row["experts"].get<uint64_t>() * row["rows"].get<uint64_t>() *
                                    row["cols"].get<uint64_t>());
        EXPECT_TRUE(row.contains("worst_expert"));
      }
      // The structural note no longer says the layout is not compared.
      EXPECT_EQ(dump_findings(r).find("does not compare"), std::string::npos) << dump_findings(r);
    }
  }
}

TEST(VerifyBmm, ExpertsSwappedAreCaughtNamingTheExperts) {
  for (Source s : {Source::Bf16, Source::Mxfp4}) {
    SCOPED_TRACE(source_name(s));
    BmmCase c(s);
    auto m = c.good();
    // Experts 1 and 2 of gate_up_proj exchanged (bytes and scales): each is a correct encoding
    // of the other expert, so only the comparison with the source sees it.
    for (const std::string& t : {kGateUp, kGateUp + "_weight_scale"}) {
      auto& x = m.at(t);
      std::swap_ranges(expert_begin(x, 1), expert_begin(x, 2), expert_begin(x, 2));
    }
    const auto r = c.verify(m);
    EXPECT_FINDING(r, Error, "numeric.error", kGateUp);
    EXPECT_FALSE(has_finding(r, Finding::Error, "numeric.error", kDown)) << dump_findings(r);
    const std::string msg = messages(r, "numeric.error");
    EXPECT_NE(msg.find("experts off: 2 of 4 (1, 2)"), std::string::npos) << msg;
    EXPECT_NE(msg.find(kGateUp + ": expert "), std::string::npos) << msg;
    // Structurally the swap is invisible.
    EXPECT_TRUE(verify_mem(m).ok()) << dump_findings(verify_mem(m));
  }
}

TEST(VerifyBmm, OneExpertWithZeroScalesAmongManyIsCaught) {
  // 64 experts: one expert dequantizing to zero (relative RMSE 1) moves the whole tensor's
  // relative RMSE only to sqrt((63 * 0.1^2 + 1) / 64) ~ 0.16, under the 0.22 threshold; the
  // per-expert comparison must still catch it.
  BmmShape sh;
  sh.experts = 64;
  BmmCase c(Source::Bf16, sh);
  auto m = c.good();
  auto& sc = m.at(kDown + "_weight_scale");
  std::fill(expert_begin(sc, 37), expert_begin(sc, 38), uint8_t{0});
  const auto r = c.verify(m);
  EXPECT_FINDING(r, Error, "numeric.error", kDown);
  EXPECT_FINDING(r, Error, "scale.zero", kDown);
  const std::string msg = messages(r, "numeric.error");
  EXPECT_NE(msg.find(kDown + ": expert 37 of 64"), std::string::npos) << msg;
  EXPECT_NE(messages(r, "scale.zero").find("expert 37"), std::string::npos) << dump_findings(r);
  const auto* t = stats_of(r, kDown);
  ASSERT_TRUE(t);
  EXPECT_LT(t->rel_rmse, 0.22);  // the aggregate alone would have passed
  EXPECT_EQ(t->worst_expert, 37);
  EXPECT_NEAR(t->worst_rel_rmse, 1.0, 1e-9);  // every weight of expert 37 decodes to 0
}

TEST(VerifyBmm, ZeroScaleOnAllZeroSourceBlockIsFine) {
  BmmCase c(Source::Bf16);
  // Expert 3, output column n = 5, K-block 1 of down_proj all zero in the source: the encoder
  // may write a zero scale there (fp4kit writes 1.0, 0x38).
  auto& src = c.values.at(kDown);  // [E, K = I, N = H]
  const uint64_t K = c.shape.inter, N = c.shape.hidden;
  for (uint64_t k = 16; k < 32; ++k) src.data[(3 * K + k) * N + 5] = 0.0f;
  c.rewrite_bf16_source();
  auto m = c.good();
  auto& sc = m.at(kDown + "_weight_scale");  // [E, K/16, N]
  const uint64_t at = (3 * (K / 16) + 1) * N + 5;
  ASSERT_EQ(sc.bytes[at], 0x38);
  sc.bytes[at] = 0;
  const auto ok = c.verify(m);
  EXPECT_TRUE(ok.ok()) << dump_findings(ok);
  sc.bytes[at + 1] = 0;  // column 6: the source block is not zero
  const auto r = c.verify(m);
  EXPECT_FINDING(r, Error, "scale.zero", kDown);
  EXPECT_NE(messages(r, "scale.zero").find("expert 3, scale [1, 6]"), std::string::npos)
      << dump_findings(r);
}

TEST(VerifyBmm, WrongGlobalScaleIsCaught) {
  for (Source s : {Source::Bf16, Source::Mxfp4}) {
    SCOPED_TRACE(source_name(s));
    BmmCase c(s);
    auto m = c.good();
    const std::string s2 = kGateUp + "_weight_scale_2";
    m.set_f32(s2, 4 * m.get_f32(s2));
    const auto r = c.verify(m);
    EXPECT_FINDING(r, Error, "numeric.error", kGateUp);
    EXPECT_EQ(r.count(Finding::Error), 1u) << dump_findings(r);
    const std::string msg = messages(r, "numeric.error");
    EXPECT_NE(msg.find("experts off: 4 of 4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("every expert is off"), std::string::npos) << msg;
    EXPECT_TRUE(verify_mem(m).ok());  // a positive finite scalar: structurally fine
  }
}

TEST(VerifyBmm, ThresholdBelowNvfp4RoundingGivesAHardDistributionWarning) {
  BmmCase c(Source::Bf16);
  // A correct output, checked with a threshold below what NVFP4 rounding can reach.
  const auto o = c.dir / "out";
  c.good().write(o);
  verify::VerifyOptions opt;
  opt.source = c.dir / "src";
  opt.max_rel_rmse = 0.01;
  const auto r = verify::verify_checkpoint(o, opt);
  // Every expert is re-quantized from the source and matches round-to-nearest: a warning naming
  // the expert, not an error.
  EXPECT_TRUE(r.ok()) << dump_findings(r);
  EXPECT_FINDING(r, Warning, "numeric.error", kGateUp);
  EXPECT_FINDING(r, Warning, "numeric.error", kDown);
  EXPECT_NE(messages(r, "numeric.error").find("a hard distribution"), std::string::npos);
  EXPECT_NE(messages(r, "numeric.error").find("4 such experts: 0, 1, 2, 3"), std::string::npos)
      << dump_findings(r);
}

TEST(VerifyBmm, GlobalScaleMissingOrPerExpert) {
  BmmCase c(Source::Bf16);
  auto m = c.good();
  m.erase(kDown + "_weight_scale_2");
  auto r = c.verify(m);
  EXPECT_FINDING(r, Error, "tensor.missing", kDown);
  EXPECT_NE(messages(r, "tensor.missing").find(kDown + "_weight_scale_2 is missing"),
            std::string::npos) << dump_findings(r);

  // One s2 per expert ([E]): ModelOpt writes one for all experts.
  m = c.good();
  const float s2 = m.get_f32(kDown + "_weight_scale_2");
  std::vector<uint8_t> per_expert;
  for (uint64_t e = 0; e < c.shape.experts; ++e) {
    const auto b = f32_bytes(s2);
    per_expert.insert(per_expert.end(), b.begin(), b.end());
  }
  m.at(kDown + "_weight_scale_2") = {DType::F32, {c.shape.experts}, per_expert};
  r = c.verify(m);
  EXPECT_FINDING(r, Error, "tensor.shape", kDown);
  EXPECT_NE(messages(r, "tensor.shape").find("ONE weight_scale_2 for all 4 experts"),
            std::string::npos) << dump_findings(r);
}

TEST(VerifyBmm, ScaleShapeAndInputScaleStillChecked) {
  BmmCase c(Source::Bf16);
  auto m = c.good();
  m.erase(kGateUp + "_input_scale");
  auto& sc = m.at(kDown + "_weight_scale");
  sc.shape = {sc.shape[0], sc.shape[2], sc.shape[1]};  // [E, N, K/16]: same size, wrong layout
  const auto r = c.verify(m);
  EXPECT_FINDING(r, Error, "input_scale.missing", kGateUp);
  EXPECT_FINDING(r, Error, "tensor.shape", kDown);
  EXPECT_EQ(stats_of(r, kDown), nullptr);  // not compared with scales of the wrong shape
  EXPECT_NE(stats_of(r, kGateUp), nullptr);
}

TEST(VerifyBmm, Mxfp4TensorsUnderAnNvfp4LabelAreAnError) {
  std::map<std::string, FloatTensor> values;
  auto src = make_gptoss_mxfp4_source(values);
  auto m = build_bmm_nvfp4(values);
  // Left over next to the NVFP4 tensor ...
  m.tensors[kDown + "_blocks"] = src.at(kDown + "_blocks");
  m.tensors[kDown + "_scales"] = src.at(kDown + "_scales");
  // ... or instead of it.
  for (const char* t : {"", "_weight_scale", "_weight_scale_2", "_input_scale"})
    m.erase(kGateUp + t);
  m.tensors[kGateUp + "_blocks"] = src.at(kGateUp + "_blocks");
  m.tensors[kGateUp + "_scales"] = src.at(kGateUp + "_scales");
  for (bool w4a4 : {true, false}) {
    auto x = m;
    if (!w4a4) {
      x.config["quantization_config"]["quant_algo"] = "W4A16_NVFP4";
      (*x.hf_quant)["quantization"]["quant_algo"] = "W4A16_NVFP4";
      x.erase(kDown + "_input_scale");
    }
    const auto r = verify_mem(x);
    EXPECT_FINDING(r, Error, "tensor.mxfp4", kDown);
    EXPECT_FINDING(r, Error, "tensor.mxfp4", kGateUp);
    const std::string msg = messages(r, "tensor.mxfp4");
    EXPECT_NE(msg.find("MXFP4"), std::string::npos) << msg;
    EXPECT_NE(msg.find(w4a4 ? "declares NVFP4" : "declares W4A16_NVFP4"), std::string::npos) << msg;
    // Not mistaken for malformed NVFP4 tensors.
    EXPECT_FALSE(has_finding(r, Finding::Error, "tensor.shape", kGateUp + "_blocks"))
        << dump_findings(r);
    EXPECT_EQ(r.modules_quantized, 1u) << dump_findings(r);
    // gate_up_proj_bias stays attached to its (MXFP4) weight, not a linear of its own.
    EXPECT_FALSE(has_finding(r, Finding::Warning, "exclude.unlisted", kGateUp + "_bias"))
        << dump_findings(r);
  }
}

TEST(VerifyBmm, SourceTensorsCoveredOrMissing) {
  BmmCase c(Source::Mxfp4);
  auto m = c.good();
  // The output lost down_proj entirely: its MXFP4 source pair has no counterpart.
  for (const char* t : {"", "_weight_scale", "_weight_scale_2", "_input_scale"})
    m.erase(kDown + t);
  const auto r = c.verify(m);
  EXPECT_FINDING(r, Error, "keep.missing", kBmmExperts);
  EXPECT_NE(messages(r, "keep.missing").find(kDown + "_blocks"), std::string::npos)
      << dump_findings(r);
  // gate_up_proj's pair is covered by the NVFP4 gate_up_proj.
  EXPECT_EQ(messages(r, "keep.missing").find(kGateUp), std::string::npos) << dump_findings(r);
}

TEST(VerifyBmm, SourceOfAnotherShapeIsNotCompared) {
  BmmCase c(Source::Bf16);
  auto& v = c.values.at(kDown);
  v.shape = {v.shape[0], v.shape[2], v.shape[1]};  // [E, N, K]: the transpose's shape
  c.rewrite_bf16_source();
  const auto out = [&] {
    auto fixed = c.values;
    auto& f = fixed.at(kDown);
    f.shape = {f.shape[0], f.shape[2], f.shape[1]};
    return build_bmm_nvfp4(fixed);
  }();
  const auto r = c.verify(out);
  EXPECT_FINDING(r, Warning, "numeric.source", kDown);
  EXPECT_NE(messages(r, "numeric.source").find("[E, K, N]"), std::string::npos) << dump_findings(r);
  EXPECT_EQ(r.tensor_errors.size(), 1u);
}

// Without a source, a zero block scale of a BMM tensor is a warning that says where it is in
// the [E, K/16, N] layout.
TEST(VerifyBmm, ZeroScaleWithoutSourceNamesExpertAndPosition) {
  BmmCase c(Source::Bf16);
  auto m = c.good();
  auto& sc = m.at(kGateUp + "_weight_scale");  // [4, 64/16 = 4, 64]
  sc.bytes[(2 * 4 + 3) * 64 + 10] = 0;          // expert 2, scale [3, 10]
  const auto r = verify_mem(m);
  EXPECT_FINDING(r, Warning, "scale.zero", kGateUp);
  EXPECT_NE(messages(r, "scale.zero").find("first at expert 2, scale [3, 10]"), std::string::npos)
      << dump_findings(r);
}

// Llama-4's names (text model inside the multimodal wrapper): the comparison only pairs "<m>"
// with the source "<m>", whatever the prefix.
TEST(VerifyBmm, Llama4NamesAreComparedLikeGptOss) {
  auto rename = [](auto& tensors) {
    std::remove_reference_t<decltype(tensors)> out;
    for (auto& [name, t] : tensors) {
      std::string n = name;
      if (n.rfind("model.", 0) == 0) n = "language_model." + n;
      const auto at = n.find(".mlp.");
      if (at != std::string::npos) n.replace(at, 5, ".feed_forward.");
      out[n] = t;
    }
    tensors = std::move(out);
  };
  const std::string down = "language_model.model.layers.0.feed_forward.experts.down_proj";
  TempDir dir;
  auto values = make_gptoss_source();
  auto src = gptoss_bf16_source(values);
  auto out = build_bmm_nvfp4(values);
  rename(src.tensors);
  rename(out.tensors);
  for (auto* cfg : {&src.config, &out.config}) {
    (*cfg)["model_type"] = "llama4";
    (*cfg)["architectures"] = {"Llama4ForConditionalGeneration"};
  }
  const nlohmann::json excl = {"lm_head", "language_model.model.embed_tokens",
                               "language_model.model.layers.0.feed_forward.router"};
  out.config["quantization_config"]["ignore"] = excl;
  (*out.hf_quant)["quantization"]["exclude_modules"] = excl;
  src.write(dir / "src");
  verify::VerifyOptions opt;
  opt.source = dir / "src";
  out.write(dir / "out");
  const auto good = verify::verify_checkpoint(dir / "out", opt);
  EXPECT_TRUE(good.ok()) << dump_findings(good);
  EXPECT_EQ(good.tensor_errors.size(), 2u) << dump_findings(good);

  // Expert 1 of down_proj encoded from expert 0's values.
  auto& w = out.at(down);
  std::copy(expert_begin(w, 0), expert_begin(w, 1), expert_begin(w, 1));
  std::filesystem::remove_all(dir / "out");
  out.write(dir / "out");
  const auto r = verify::verify_checkpoint(dir / "out", opt);
  EXPECT_FINDING(r, Error, "numeric.error", down);
  EXPECT_NE(messages(r, "numeric.error").find(down + ": expert 1 of 4"), std::string::npos)
      << dump_findings(r);
}

// ModelOpt's own exports (ModelOpt 0.47 on an H100, python/golden/models: tiny gpt-oss and
// Llama-4, W4A16 and W4A4) pass against the source they were made from: the comparison reads
// the layout as ModelOpt writes it, not only as this test's fixture does. One expert overwritten
// with another's bytes is then an error naming it.
TEST(VerifyBmm, ModelOptGpuExportsPassAndOneCopiedExpertFails) {
  const std::filesystem::path golden =
      std::filesystem::path(FP4KIT_SOURCE_DIR) / "python/golden/models";
  for (const std::string family : {"gpt_oss", "llama4"}) {
    for (const std::string mode : {"w4a16", "w4a4"}) {
      SCOPED_TRACE(family + " " + mode);
      const auto out_dir = golden / family / mode / "modelopt";
      ASSERT_TRUE(std::filesystem::exists(out_dir / "model.safetensors")) << out_dir;
      verify::VerifyOptions opt;
      opt.source = golden / family / "src";
      const auto r = verify::verify_checkpoint(out_dir, opt);
      EXPECT_TRUE(r.ok()) << dump_findings(r);
      EXPECT_EQ(r.count(Finding::Warning), 0u) << dump_findings(r);
      std::string bmm;
      for (const auto& t : r.tensor_errors) {
        if (t.experts == 0) continue;
        bmm = t.module;
        EXPECT_LT(t.rel_rmse, 0.15) << t.module;
        EXPECT_EQ(t.count, t.experts * t.rows * t.cols) << t.module;
      }
      ASSERT_FALSE(bmm.empty()) << "no BMM tensor compared";

      // The same export with expert 1 of `bmm` replaced by expert 0.
      const auto ck = Checkpoint::open(out_dir);
      MemCheckpoint m;
      for (const auto& name : ck->tensor_names()) {
        const auto b = ck->bytes(name);
        m.tensors[name] = {ck->info(name).dtype, ck->info(name).shape, {b.begin(), b.end()}};
      }
      m.config = ck->config();
      std::ifstream hf(out_dir / "hf_quant_config.json");
      m.hf_quant = nlohmann::json::parse(hf);
      for (const std::string& t : {bmm, bmm + "_weight_scale"}) {
        auto& x = m.at(t);
        std::copy(expert_begin(x, 0), expert_begin(x, 1), expert_begin(x, 1));
      }
      TempDir dir;
      m.write(dir / "out");
      const auto broken = verify::verify_checkpoint(dir / "out", opt);
      EXPECT_FINDING(broken, Error, "numeric.error", bmm);
      EXPECT_NE(messages(broken, "numeric.error").find(bmm + ": expert 1 of "), std::string::npos)
          << dump_findings(broken);
    }
  }
}

// Random shape / dtype damage to the BMM tensors of the output and the source: findings, never
// an exception or a crash (the comparison indexes experts by the shapes it reads).
TEST(VerifyBmm, RandomDamageNeverThrows) {
  std::mt19937 rng(5);
  const std::vector<std::vector<uint64_t>> shapes = {
      {4, 16, 64}, {4, 64, 16}, {4, 32, 64}, {4, 4, 64}, {4, 64, 4}, {4, 64, 2, 16}, {4, 64, 2},
      {4}, {}, {1}, {0, 16, 64}, {4, 16, 0}, {2, 32, 64}, {4, 2, 64}};
  const std::vector<DType> dtypes = {DType::U8, DType::F8_E4M3, DType::BF16, DType::F32};
  auto damage = [&](MemCheckpoint& m, const std::vector<std::string>& names) {
    const std::string& n = names[rng() % names.size()];
    if (!m.tensors.count(n)) return;
    OutTensor& t = m.at(n);
    if (rng() % 2) t.shape = shapes[rng() % shapes.size()];
    if (rng() % 2) t.dtype = dtypes[rng() % dtypes.size()];
    uint64_t count = 1;
    for (auto d : t.shape) count *= d;
    t.bytes.assign(count * dtype_size(t.dtype), static_cast<uint8_t>(rng()));
  };
  for (Source s : {Source::Bf16, Source::Mxfp4}) {
    BmmCase c(s);
    const std::vector<std::string> out_names = {kDown, kDown + "_weight_scale",
                                                kDown + "_weight_scale_2", kDown + "_input_scale"};
    const std::vector<std::string> src_names = {kDown, kDown + "_blocks", kDown + "_scales"};
    MemCheckpoint src_good;
    if (s == Source::Bf16) src_good = gptoss_bf16_source(c.values, c.shape);
    else {
      std::map<std::string, FloatTensor> v;
      src_good = make_gptoss_mxfp4_source(v, c.shape);
    }
    for (int i = 0; i < 40; ++i) {
      auto out = c.good();
      auto src = src_good;
      damage(out, out_names);
      if (i % 2) damage(src, src_names);
      std::filesystem::remove_all(c.dir / "src");
      src.write(c.dir / "src");
      EXPECT_NO_THROW(c.verify(out)) << source_name(s) << " round " << i;
    }
  }
}

}  // namespace
}  // namespace fp4kit::testing
