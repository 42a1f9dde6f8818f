#pragma once
// `fp4kit eval`: perplexity of a (quantized) model and, against a base model or saved base
// log-probabilities, the KL-divergence statistics of kld_summary (llama.cpp's definitions).
//
// Windows follow shared/data/README.md's PPL protocol: window i = stream[ctx*i : ctx*i + ctx+1],
// fed as a fresh sequence (window[:-1]); every position is scored on the next token (unlike
// llama.cpp, which scores only the second half of each chunk).
//
// Base log-probability file (--save-base / --base-logits), little-endian:
//   "FP4KBASE" (8 bytes), u32 version = 1, u32 vocab, u32 ctx, u32 windows,
//   per window: u32 n, then n i32 token ids (the window, targets included),
//   then per window, per scored position (n - 1 of them): vocab f32 = the FULL log-softmax of the
//   base model's logits (exact; 4 bytes x vocab per token, so large for big vocabularies).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include "fp4kit/engine/eval_metrics.hpp"
#include "fp4kit/engine/forward.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

struct EvalOptions {
  size_t ctx = 512;
  size_t max_windows = 0;  // --chunks (0 = all)
  bool simulate_activations = true;  // W4A4 checkpoints: quantize linear inputs
  size_t group_bytes = size_t(1) << 30;  // base log-probs held in memory at once
  std::filesystem::path save_base, base_logits, dump_logits;
  size_t chunk_tokens = 2048;
  // Runs a checkpoint's forward pass with logits; empty = the CPU Engine. The GPU backend plugs
  // in here (`eval --device cuda`).
  using Runner = std::function<void(const std::vector<std::vector<int32_t>>&,
                                    const ForwardOptions&, const LogitsSink&)>;
  std::function<Runner(const Checkpoint&)> make_runner;
};

struct EvalResult {
  size_t windows = 0;
  PerplexityResult quant;
  std::optional<PerplexityResult> base;
  std::optional<KldSummary> kld;
};

// Gives the next window (at least 2 tokens) in `window`; false when there is none left.
using WindowSource = std::function<bool(std::vector<int32_t>& window)>;

// Windows are taken from `windows` as they are evaluated, in groups whose base log-probs fit in
// group_bytes, so memory follows a group, not the data. `windows` is not used when
// options.base_logits is set (the file carries its windows); with save_base the windows are first
// written to the file's header, then read back from it. `base` may be null: perplexity only
// (unless base_logits is given).
EvalResult evaluate(const Checkpoint& quant, const Checkpoint* base, const WindowSource& windows,
                    const EvalOptions& options);
// The same over ppl_windows(stream, ctx, max_windows) of a stream held in memory.
EvalResult evaluate(const Checkpoint& quant, const Checkpoint* base,
                    const std::vector<int32_t>& stream, const EvalOptions& options);

}  // namespace fp4kit::engine
