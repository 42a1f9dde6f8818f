// Host-held activations (ForwardOptions::host_activations): the hidden states stay in host memory
// and each layer runs group by group through backend memory. The statistics and logits must be
// the same bytes as the resident run's, and a sequence's logits must not depend on the other
// sequences of its run (a group written to or read back from the wrong rows breaks both).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/stats_collector.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit::engine {
namespace {

// Different lengths (one longer than a group, one of a single token), so that groups hold
// 1..several sequences and start at rows that are not multiples of anything.
const std::vector<size_t> kLengths = {5, 13, 7, 21, 3, 9, 1, 11, 6, 17};

std::vector<std::vector<int32_t>> make_sequences(size_t vocab) {
  std::vector<std::vector<int32_t>> seqs;
  uint32_t x = 12345;
  for (size_t n : kLengths) {
    std::vector<int32_t> s(n);
    for (auto& t : s) {
      x = x * 1664525u + 1013904223u;
      t = static_cast<int32_t>((x >> 8) % vocab);
    }
    seqs.push_back(std::move(s));
  }
  return seqs;
}

struct Outcome {
  ActivationStats stats;
  std::vector<std::vector<float>> logits;  // per sequence [len, vocab]
};

Outcome run(const Engine& eng, const std::vector<std::vector<int32_t>>& seqs,
            const ForwardOptions& opt, bool stats = true) {
  Outcome o;
  StatsCollector col;
  o.logits.resize(seqs.size());
  eng.run(seqs, opt, stats ? &col : nullptr,
          [&](size_t s, const float* lg, size_t len, size_t vocab) {
            EXPECT_TRUE(o.logits[s].empty()) << "sequence " << s << " twice";
            EXPECT_EQ(len, seqs[s].size()) << "sequence " << s;
            o.logits[s].assign(lg, lg + len * vocab);
          });
  o.stats = col.result();
  return o;
}

template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

void expect_identical(const Outcome& a, const Outcome& b) {
  ASSERT_EQ(a.stats.input_amax.size(), b.stats.input_amax.size());
  ASSERT_FALSE(a.stats.input_amax.empty());
  for (const auto& [m, amax] : a.stats.input_amax) {
    ASSERT_TRUE(b.stats.input_amax.count(m)) << m;
    EXPECT_EQ(std::memcmp(&amax, &b.stats.input_amax.at(m), sizeof(float)), 0) << m;
    EXPECT_TRUE(same_bytes(a.stats.input_sq_sum.at(m), b.stats.input_sq_sum.at(m))) << m;
    EXPECT_EQ(a.stats.token_count.at(m), b.stats.token_count.at(m)) << m;
  }
  EXPECT_EQ(a.stats.routed_tokens, b.stats.routed_tokens);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  for (size_t s = 0; s < a.logits.size(); ++s)
    EXPECT_TRUE(same_bytes(a.logits[s], b.logits[s])) << "logits of sequence " << s;
}

// Each sequence alone (one group, resident) against its logits in the grouped run: equal up to
// the rounding of products over other row sets (MoE experts see other tokens beside it).
void expect_independent_of_batch_mates(const Engine& eng,
                                       const std::vector<std::vector<int32_t>>& seqs,
                                       const Outcome& grouped) {
  for (size_t s = 0; s < seqs.size(); ++s) {
    const Outcome alone = run(eng, {seqs[s]}, ForwardOptions{}, false);
    const std::vector<float>& a = alone.logits[0];
    const std::vector<float>& g = grouped.logits[s];
    ASSERT_EQ(a.size(), g.size()) << "sequence " << s;
    double scale = 0.0, diff = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(a[i])));
      diff = std::max(diff, std::abs(static_cast<double>(a[i]) - g[i]));
    }
    ASSERT_GT(scale, 0.0);
    EXPECT_LT(diff, 1e-4 * scale) << "sequence " << s << " (largest |logit| " << scale << ")";
  }
}

// `thorough`: also groups of one span each and every sequence alone (a model with heavy layers
// runs the first comparison only).
void check_model(const std::filesystem::path& dir, bool all_experts = false,
                 bool thorough = true) {
  auto ckpt = Checkpoint::open(dir);
  const Engine eng(*ckpt);
  const auto seqs = make_sequences(static_cast<size_t>(eng.spec().vocab));
  size_t tokens = 0;
  for (const auto& s : seqs) tokens += s.size();
  ForwardOptions opt;
  opt.chunk_tokens = 8;   // spans: one sequence, or a few short ones
  opt.group_tokens = 16;  // groups of 1..4 sequences; the 21-token one alone
  opt.all_experts = all_experts;
  const Outcome resident = run(eng, seqs, opt);
  opt.host_activations = true;
  const Outcome host = run(eng, seqs, opt);
  expect_identical(resident, host);
  for (const auto& [m, n] : host.stats.token_count)
    if (m.find(".experts.") == std::string::npos && m.find("shared_expert") == std::string::npos)
      EXPECT_EQ(n, static_cast<int64_t>(tokens)) << m << ": every token once";
  if (!thorough) return;
  // Groups of one span each: exactly the same between the modes again.
  opt.group_tokens = 1;
  const Outcome single = run(eng, seqs, opt);
  opt.host_activations = false;
  expect_identical(run(eng, seqs, opt), single);
  expect_independent_of_batch_mates(eng, seqs, host);
}

TEST(BatchGroups, WholeSpansInOrderAtMostTheGroupUnlessOneSpan) {
  const Batch b = Batch::make(kLengths, 8);
  for (size_t G : {size_t(1), size_t(8), size_t(16), size_t(30), size_t(1000)}) {
    const std::vector<BatchGroup> groups = batch_groups(b, G);
    size_t row = 0, seq = 0, spans = 0;
    for (const BatchGroup& g : groups) {
      EXPECT_EQ(g.row0, row) << "G " << G;
      EXPECT_EQ(g.seq0, seq) << "G " << G;
      EXPECT_TRUE(g.batch.tokens <= G || g.batch.spans.size() == 1) << "G " << G;
      EXPECT_EQ(g.batch.offsets.front(), 0u);
      EXPECT_EQ(g.batch.offsets.back(), g.batch.tokens);
      for (size_t q = 0; q < g.batch.sequences(); ++q)
        EXPECT_EQ(g.batch.length(q), kLengths[seq + q]) << "G " << G << " sequence " << seq + q;
      for (const Batch::Span& sp : g.batch.spans) {
        const Batch::Span& whole = b.spans[spans++];
        EXPECT_EQ(sp.row0 + g.row0, whole.row0);
        EXPECT_EQ(sp.rows, whole.rows);
        EXPECT_EQ(sp.seq0 + g.seq0, whole.seq0);
        EXPECT_EQ(sp.seq1 + g.seq0, whole.seq1);
      }
      row += g.batch.tokens;
      seq += g.batch.sequences();
    }
    EXPECT_EQ(row, b.tokens);
    EXPECT_EQ(seq, kLengths.size());
    EXPECT_EQ(spans, b.spans.size());
    if (G >= b.tokens) EXPECT_EQ(groups.size(), 1u);
  }
}

// A small synthetic checkpoint of `type` (4 heads of 16, 2 kv heads, hidden 64, top-2 experts of
// 32), written into `dir`.
std::filesystem::path tiny_model(const std::filesystem::path& dir, const std::string& type,
                                 int64_t layers, int64_t experts, int64_t vocab) {
  SyntheticMoeSpec s;
  s.model_type = type;
  s.layers = layers;
  s.hidden = 64;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 16;
  s.experts = experts;
  s.top_k = 2;
  s.moe_intermediate = 32;
  s.vocab = vocab;
  write_synthetic_moe(dir, s);
  return dir;
}

TEST(HostHeld, Qwen3MoeThreeLayersSameBytesAsResident) {
  testing::TempDir tmp;
  check_model(tiny_model(tmp / "m", "qwen3_moe", 3, 6, 96));
}

TEST(HostHeld, MixtralAllExpertsSameBytesAsResident) {
  testing::TempDir tmp;
  check_model(tiny_model(tmp / "m", "mixtral", 2, 4, 80), /*all_experts=*/true);
}

TEST(HostHeld, DeepseekMlaDenseAndSharedExpertSameBytesAsResident) {
  // DeepSeek-V3's MLA (its own dims: 128 heads, q-LoRA 1536), a dense layer, then MoE with a
  // shared expert and the grouped sigmoid router; FP8 linears.
  testing::TempDir tmp;
  SyntheticMoeSpec s;
  s.model_type = "deepseek_v3";
  s.layers = 2;
  s.dense_layers = 1;
  s.hidden = 128;
  s.experts = 16;
  s.moe_intermediate = 64;
  s.vocab = 64;
  write_synthetic_moe(tmp / "m", s);
  check_model(tmp / "m", false, /*thorough=*/false);
}

TEST(HostHeld, Qwen2MoeGatedSharedExpertSameBytesAsResident) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-qwen2moe");
  check_model(model);
}

TEST(HostHeld, SaveRestoreKeepsTheHostCopy) {
  testing::TempDir tmp;
  auto ckpt = Checkpoint::open(tiny_model(tmp / "m", "qwen3_moe", 2, 4, 64));
  const Engine eng(*ckpt);
  const auto seqs = make_sequences(64);
  ForwardOptions opt;
  opt.chunk_tokens = 8;
  opt.group_tokens = 16;
  opt.host_activations = true;
  const Outcome plain = run(eng, seqs, opt, false);
  // As quantize --gptq-sequential: layer 0 run twice from the same saved input.
  ForwardPass pass(eng, seqs, opt, true);
  pass.save();
  pass.run_layer(0, nullptr);
  pass.restore();
  pass.run_layer(0, nullptr);
  pass.run_layer(1, nullptr);
  Outcome again;
  again.logits.resize(seqs.size());
  pass.finish([&](size_t q, const float* lg, size_t len, size_t vocab) {
    again.logits[q].assign(lg, lg + len * vocab);
  });
  for (size_t q = 0; q < seqs.size(); ++q)
    EXPECT_TRUE(same_bytes(plain.logits[q], again.logits[q])) << "sequence " << q;
}

}  // namespace
}  // namespace fp4kit::engine
