#pragma once
// Shared helpers of the engine tests: perplexity of a checkpoint under the data README protocol.
#include <cstdint>
#include <filesystem>
#include <random>
#include <vector>

#include "fp4kit/engine/eval_metrics.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/token_windows.hpp"
#include "fp4kit/io/checkpoint.hpp"

namespace fp4kit::testing {

// n values drawn from N(0, sd^2).
inline std::vector<float> random_normal(std::mt19937& gen, size_t n, float sd) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// README "PPL protocol": windows of ctx+1 tokens of the first `tokens` ids, all targets scored.
inline engine::PerplexityResult protocol_ppl(const std::filesystem::path& model,
                                             const std::vector<int32_t>& stream, size_t tokens,
                                             size_t ctx = 256) {
  auto ckpt = Checkpoint::open(model);
  engine::Engine eng(*ckpt);
  std::vector<int32_t> head(stream.begin(),
                            stream.begin() + static_cast<ptrdiff_t>(std::min(tokens, stream.size())));
  auto windows = engine::ppl_windows(head, ctx, 0);
  std::vector<std::vector<int32_t>> inputs;
  for (auto& w : windows) inputs.emplace_back(w.begin(), w.end() - 1);
  engine::PerplexityAccumulator acc;
  eng.run(inputs, {}, nullptr, [&](size_t s, const float* lg, size_t len, size_t vocab) {
    for (size_t p = 0; p < len; ++p) acc.add(engine::token_nll(lg + p * vocab, vocab, windows[s][p + 1]));
  });
  return acc.result();
}

}  // namespace fp4kit::testing
