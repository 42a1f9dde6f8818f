// The engine's blocks and families on the CUDA backend against the CPU backend on whole models:
// real stories260K checkpoints of four families (shared/data) and synthetic Qwen3-MoE checkpoints
// (BF16 as stored, widened on the GPU; fused 3-D experts). Statistics (amax, per-channel sums of
// squares, token and routed counts) and logits, with float32 products (tight) and TF32 products
// (the default). bench/cuda_family_check.py covers every other family with transformers' models.
#include <algorithm>
#include <cstring>
#include <fstream>

#include "cuda/gpu_support.hpp"
#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/cuda/cuda_backend.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/stats_collector.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit::engine::cuda {
namespace {

struct Outputs {
  ActivationStats stats;
  std::vector<float> logits;
};

Outputs run_cpu(const Checkpoint& c, const std::vector<std::vector<int32_t>>& seqs, bool all) {
  Engine eng(c);
  StatsCollector st;
  Outputs o;
  ForwardOptions fo;
  fo.all_experts = all;
  fo.simulate_activations = false;
  eng.run(seqs, fo, &st, [&](size_t, const float* lg, size_t len, size_t V) {
    o.logits.insert(o.logits.end(), lg, lg + len * V);
  });
  o.stats = st.result();
  return o;
}

// The engine's own blocks and families on the CUDA backend.
Outputs run_backend(const Checkpoint& c, const std::vector<std::vector<int32_t>>& seqs, bool tf32,
                    bool all) {
  BackendOptions bo;
  bo.tf32 = tf32;
  Engine eng(c, std::shared_ptr<Backend>(make_cuda_backend(bo)));
  StatsCollector st;
  Outputs o;
  ForwardOptions fo;
  fo.all_experts = all;
  fo.simulate_activations = false;
  eng.run(seqs, fo, &st, [&](size_t, const float* lg, size_t len, size_t V) {
    o.logits.insert(o.logits.end(), lg, lg + len * V);
  });
  o.stats = st.result();
  return o;
}

// moved_tol: the largest fraction of routes that may move to another expert (TF32 products: a
// near tie between two experts' router logits can flip, as in any TF32 forward); the experts whose
// routed counts differ are left out of the statistics comparison (their inputs are other tokens).
void expect_close(const Outputs& g, const Outputs& c, double stat_tol, double logit_tol,
                  const std::string& label, double moved_tol = 0.0) {
  ASSERT_EQ(g.stats.input_amax.size(), c.stats.input_amax.size()) << label;
  ASSERT_GT(c.stats.input_amax.size(), 0u);
  std::vector<std::string> moved;
  int64_t routes = 0, moved_routes = 0;
  for (const auto& [e, n] : c.stats.routed_tokens) {
    ASSERT_TRUE(g.stats.routed_tokens.count(e)) << label << ": " << e;
    routes += n;
    const int64_t d = g.stats.routed_tokens.at(e) - n;
    if (d != 0) moved.push_back(e + ".");
    moved_routes += d < 0 ? -d : d;
  }
  moved_routes /= 2;  // each moved route leaves one expert and reaches another
  EXPECT_LE(double(moved_routes), moved_tol * double(routes)) << label << ": routes moved";
  if (moved_tol == 0.0) {
    EXPECT_EQ(g.stats.routed_tokens, c.stats.routed_tokens) << label;
  }
  double worst_amax = 0.0, worst_sq = 0.0;
  for (const auto& [m, a] : c.stats.input_amax) {
    ASSERT_TRUE(g.stats.input_amax.count(m)) << label << ": " << m;
    if (std::any_of(moved.begin(), moved.end(),
                    [&](const std::string& p) { return m.compare(0, p.size(), p) == 0; }))
      continue;
    worst_amax = std::max(worst_amax, double(std::fabs(g.stats.input_amax.at(m) - a) / a));
    EXPECT_EQ(g.stats.token_count.at(m), c.stats.token_count.at(m)) << label << ": " << m;
    const auto& sg = g.stats.input_sq_sum.at(m);
    const auto& sc = c.stats.input_sq_sum.at(m);
    ASSERT_EQ(sg.size(), sc.size());
    double tg = 0.0, tc = 0.0;
    for (size_t i = 0; i < sc.size(); ++i) tg += sg[i], tc += sc[i];
    worst_sq = std::max(worst_sq, std::fabs(tg - tc) / tc);
  }
  EXPECT_LT(worst_amax, stat_tol) << label << ": amax";
  EXPECT_LT(worst_sq, stat_tol) << label << ": sum of squares";
  ASSERT_EQ(g.logits.size(), c.logits.size());
  EXPECT_LT(testing::rel_l2(g.logits, c.logits), logit_tol) << label << ": logits";
  std::printf("%s: worst amax %.2e, worst sum of squares %.2e, logits %.2e, %lld of %lld routes "
              "moved\n", label.c_str(), worst_amax, worst_sq, testing::rel_l2(g.logits, c.logits),
              static_cast<long long>(moved_routes), static_cast<long long>(routes));
}

std::vector<std::vector<int32_t>> windows(const std::filesystem::path& u16, size_t n, size_t len) {
  std::ifstream f(u16, std::ios::binary);
  std::vector<uint16_t> ids(n * len + 1000);
  f.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 2));
  std::vector<std::vector<int32_t>> out;
  size_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t l = i == 1 ? len / 3 + 1 : len;  // one shorter sequence
    out.emplace_back(ids.begin() + at, ids.begin() + at + l);
    at += l;
  }
  return out;
}

class CudaEngineStories : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaEngineStories, MatchesCpuEngine) {
  FP4KIT_REQUIRE_GPU();
  FP4KIT_REQUIRE_SHARED(model, std::string("models/") + GetParam());
  FP4KIT_REQUIRE_SHARED(text, "text/tinystories_val.stories260k.u16");
  auto c = Checkpoint::open(model);
  const auto seqs = windows(text, 6, 200);
  const Outputs cpu = run_cpu(*c, seqs, false);
  // float32 products: the statistics within 0.1% (float32 sums in another order)
  expect_close(run_backend(*c, seqs, false, false), cpu, 1e-3, 1e-4,
               std::string(GetParam()) + " fp32");
  // TF32 products (default): within 1%
  expect_close(run_backend(*c, seqs, true, false), cpu, 1e-2, 1e-2,
               std::string(GetParam()) + " tf32", 0.01);
  if (ModelSpec::from_checkpoint(*c).n_experts > 0)
    expect_close(run_backend(*c, seqs, false, true), run_cpu(*c, seqs, true), 1e-3, 1e-4,
                 std::string(GetParam()) + " fp32 --all-experts");
}

INSTANTIATE_TEST_SUITE_P(Families, CudaEngineStories,
                         ::testing::Values("stories260k-llama", "stories260k-qwen3moe",
                                           "stories260k-qwen2moe", "stories260k-mixtral"));

TEST(CudaEngineSynthetic, Bf16AndFusedExpertsMatchCpu) {
  FP4KIT_REQUIRE_GPU();
  for (bool fused : {false, true}) {
    testing::TempDir dir;
    SyntheticMoeSpec s;
    s.layers = 2;
    s.hidden = 256;
    s.heads = 4;
    s.kv_heads = 2;
    s.head_dim = 64;
    s.experts = 16;
    s.top_k = 4;
    s.moe_intermediate = 128;
    s.vocab = 512;
    s.fused_experts = fused;
    write_synthetic_moe(dir / "m", s);
    auto c = Checkpoint::open(dir / "m");
    std::vector<std::vector<int32_t>> seqs;
    for (int i = 0; i < 5; ++i) {
      std::vector<int32_t> q(i == 2 ? 50 : 130);
      for (size_t p = 0; p < q.size(); ++p) q[p] = static_cast<int32_t>((p * 31 + i * 7) % 512);
      seqs.push_back(q);
    }
    expect_close(run_backend(*c, seqs, false, false), run_cpu(*c, seqs, false), 1e-3, 1e-4,
                 fused ? "synthetic fused experts fp32" : "synthetic bf16 fp32");
  }
}

// Host-held on the GPU (two windows, the next group uploaded and the previous read back on a
// copy stream while a group computes) gives the resident run's statistics and logits byte for
// byte: groups of 1..2 sequences of uneven lengths.
TEST(CudaEngineSynthetic, HostHeldOverlappedSameBytesAsResident) {
  FP4KIT_REQUIRE_GPU();
  testing::TempDir dir;
  SyntheticMoeSpec s;
  s.layers = 3;
  s.hidden = 256;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.experts = 16;
  s.top_k = 4;
  s.moe_intermediate = 128;
  s.vocab = 512;
  write_synthetic_moe(dir / "m", s);
  auto c = Checkpoint::open(dir / "m");
  std::vector<std::vector<int32_t>> seqs;
  for (int i = 0; i < 13; ++i) {
    std::vector<int32_t> q(static_cast<size_t>(7 + (i * 37) % 90));
    for (size_t p = 0; p < q.size(); ++p) q[p] = static_cast<int32_t>((p * 31 + i * 7) % 512);
    seqs.push_back(q);
  }
  Engine eng(*c, std::shared_ptr<Backend>(make_cuda_backend(BackendOptions{})));
  Outputs out[2];
  for (int host = 0; host < 2; ++host) {
    StatsCollector st;
    ForwardOptions fo;
    fo.simulate_activations = false;
    fo.chunk_tokens = 64;
    fo.group_tokens = 100;
    fo.host_activations = host == 1;
    eng.run(seqs, fo, &st, [&](size_t, const float* lg, size_t len, size_t V) {
      out[host].logits.insert(out[host].logits.end(), lg, lg + len * V);
    });
    out[host].stats = st.result();
  }
  ASSERT_GT(batch_groups(Batch::make([&] {
                           std::vector<size_t> l;
                           for (const auto& q : seqs) l.push_back(q.size());
                           return l;
                         }(), 64), 100).size(), 4u);
  ASSERT_FALSE(out[0].stats.input_amax.empty());
  EXPECT_EQ(out[1].stats.input_amax, out[0].stats.input_amax);
  EXPECT_EQ(out[1].stats.input_sq_sum, out[0].stats.input_sq_sum);
  EXPECT_EQ(out[1].stats.token_count, out[0].stats.token_count);
  EXPECT_EQ(out[1].stats.routed_tokens, out[0].stats.routed_tokens);
  ASSERT_EQ(out[1].logits.size(), out[0].logits.size());
  EXPECT_EQ(std::memcmp(out[1].logits.data(), out[0].logits.data(),
                        out[0].logits.size() * sizeof(float)), 0)
      << "logits not the same bytes";
}

}  // namespace
}  // namespace fp4kit::engine::cuda
