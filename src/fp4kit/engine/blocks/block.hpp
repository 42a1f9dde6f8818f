#pragma once
// What every block of a decoder layer sees: the batch of sequences, the backend, the observer.
// A block owns its weights (uploaded when it is built) and adds its output to the hidden states
// (its own pre-norm and residual included): hidden += block(norm(hidden)).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/engine/backend.hpp"
#include "fp4kit/engine/column_stats_slots.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/profile.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine {

// The tokens of one run: sequence s holds rows [offsets[s], offsets[s + 1]) of the hidden states
// [tokens, hidden]; `spans` are blocks of whole sequences of about chunk_tokens rows (a longer
// sequence is a span of its own), the unit of attention-like blocks.
struct Batch {
  struct Span {
    size_t row0 = 0, rows = 0;
    size_t seq0 = 0, seq1 = 0;  // sequences [seq0, seq1)
  };
  std::vector<size_t> offsets;
  std::vector<Span> spans;
  size_t tokens = 0;
  size_t chunk_tokens = 2048;  // rows per product for token-wise blocks (MLP, experts)

  static Batch make(const std::vector<size_t>& seq_lengths, size_t chunk_tokens);
  size_t sequences() const { return offsets.size() - 1; }
  size_t length(size_t s) const { return offsets[s + 1] - offsets[s]; }
};

// A layer step (ForwardOptions::group_tokens): consecutive whole spans of a batch, as a batch of
// its own (rows from 0) that starts at row `row0` and sequence `seq0` of the whole.
struct BatchGroup {
  size_t row0 = 0, seq0 = 0;
  Batch batch;
};
// The groups of at most group_tokens rows (a longer span alone), in row order, covering `b`.
std::vector<BatchGroup> batch_groups(const Batch& b, size_t group_tokens);

struct RunContext {
  Backend& be;
  const Batch& batch;
  ActivationObserver* obs = nullptr;
  bool all_experts = false;  // ForwardOptions::all_experts (only with an observer)
  // Column statistics kept in backend memory until the layer ends (a backend that defers them).
  ColumnStatsSlots* slots = nullptr;

  // Hands x [rows, k] (backend memory), the input of every module in `modules`, to the observer.
  void observe(const std::vector<const std::string*>& modules, const float* x, size_t rows,
               size_t k) const {
    if (!obs) return;
    if (!obs->wants_column_stats()) {
      obs->linear_input(modules, be.host_view(x, rows * k), rows, k);
      return;
    }
    const profile::Scope ps("stats: column statistics");
    if (slots) {
      slots->add(modules, x, rows, k);
      return;
    }
    std::vector<float> colmax(k);
    std::vector<double> sumsq(k);
    if (!be.column_stats(x, rows, k, colmax.data(), sumsq.data()))
      throw Error("calibration: non-finite activation entering " + *modules.front() +
                  " (the model produced NaN/Inf on this data)");
    obs->linear_column_stats(modules, colmax.data(), sumsq.data(), rows, k);
  }
  // x [rows, k] (backend memory) read by expert `expert` (>= 0) of the 3-D BMM tensor `module`.
  void observe_bmm_expert(const std::string& module, int64_t expert, const float* x, size_t rows,
                          size_t k) const {
    if (obs && expert >= 0 && obs->wants_bmm_expert_rows())
      obs->bmm_expert_input(module, static_cast<uint64_t>(expert), be.host_view(x, rows * k),
                            rows, k);
  }
};

class Block {
 public:
  virtual ~Block() = default;
  // hidden [batch.tokens, hidden] in backend memory; hidden += this block's output.
  virtual void forward(const RunContext& ctx, float* hidden) = 0;
};

}  // namespace fp4kit::engine
