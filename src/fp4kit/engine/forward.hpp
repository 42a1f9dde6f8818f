#pragma once
// The layer-by-layer forward pass in float32 (run.cpp; families/ say which blocks a layer holds,
// blocks/ compute them on a Backend). Only one layer's weights are decoded at a time
// (MoE layers: one expert at a time). Each layer runs over groups of whole sequences, one group
// after another (ForwardOptions::group_tokens); the hidden states of all tokens stay between layers
// in backend memory (resident) or in host memory (host-held: one group at a time in backend
// memory), with the same numbers either way. Used by `fp4kit calibrate` (activation statistics)
// and `fp4kit eval`.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fp4kit/engine/backend.hpp"
#include "fp4kit/engine/model_spec.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

// Receives the inputs of the quantizable linears while the forward runs.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  // x [rows, k] is the input of every linear named in `modules` (they share it: q/k/v, gate/up).
  virtual void linear_input(const std::vector<const std::string*>& modules, const float* x,
                            size_t rows, size_t k) = 0;
  // The router sent `tokens` tokens to the routed expert `expert_prefix` (real routing).
  virtual void routed(const std::string& expert_prefix, int64_t tokens) = 0;
  // An observer that needs only per-column statistics says so: the backend then reduces x where
  // it lives (Backend::column_stats, on the GPU for a device backend) and hands over k values
  // through linear_column_stats instead of rows x k through linear_input.
  virtual bool wants_column_stats() const { return false; }
  virtual void linear_column_stats(const std::vector<const std::string*>& modules,
                                   const float* colmax, const double* sumsq, size_t rows,
                                   size_t k) {}
  // Expert `expert` of the 3-D BMM expert tensor `module` (gpt-oss) reads x [rows, k]: besides
  // linear_input, which sees it under `module` (shared by all experts), for an observer that
  // keeps per-expert statistics and says so.
  virtual bool wants_bmm_expert_rows() const { return false; }
  virtual void bmm_expert_input(const std::string& module, uint64_t expert, const float* x,
                                size_t rows, size_t k) {}
  // True when linear_input may be called from several threads at once for DIFFERENT modules
  // (then blocks may run independent experts side by side).
  virtual bool concurrent() const { return false; }
};

struct ForwardOptions {
  // Run every routed expert on every token reaching its layer; the observer sees all of them,
  // the layer output still uses the real routing only.
  bool all_experts = false;
  // Quantize linear inputs of W4A4 checkpoints (input_scale present) as Blackwell kernels do.
  bool simulate_activations = true;
  // Tokens per block for the linears (whole sequences are kept together for attention).
  size_t chunk_tokens = 2048;
  // Tokens per layer step: every block of a layer runs over groups of consecutive whole spans of
  // at most this many tokens (a longer span is a group of its own), one group after another; the
  // MoE block routes and runs its experts per group. 0: Engine::group_tokens(chunk_tokens). The
  // numbers depend on it (products per group), never on host_activations.
  size_t group_tokens = 0;
  // Host-held mode: the hidden states [tokens, hidden] stay in host memory between layers; each
  // layer's blocks are loaded once, then each group is written into backend memory, run through
  // them and read back. Backend memory then holds one group's activations instead of all tokens'.
  // Statistics and logits are byte-identical to the resident mode (false).
  bool host_activations = false;
  // Called after each layer with (layer index, layers).
  std::function<void(int64_t, int64_t)> on_layer;
};

// Called once per sequence, in order, with its logits [len, vocab].
using LogitsSink = std::function<void(size_t seq, const float* logits, size_t len, size_t vocab)>;

class ForwardPass;

class Engine {
 public:
  // `backend` null: the CPU backend.
  explicit Engine(const Checkpoint& ckpt, std::shared_ptr<Backend> backend = nullptr);
  const ModelSpec& spec() const { return spec_; }
  const Checkpoint& checkpoint() const { return ckpt_; }

  // Runs fresh sequences (positions from 0, no cache). `sink` may be empty (statistics only:
  // the final norm and lm_head are then skipped).
  void run(const std::vector<std::vector<int32_t>>& sequences, const ForwardOptions& opt,
           ActivationObserver* observer, const LogitsSink& sink) const;

  // ForwardOptions::group_tokens = 0: chunk_tokens, or for a model with MoE layers at least the
  // MoE block's round of experts side by side (moe_round_tokens: 512 MiB of expert outputs).
  size_t group_tokens(size_t chunk_tokens) const;
  // Bytes of activations kept in backend memory for `tokens` tokens (resident: the hidden states
  // of all tokens; host_held: those of one group, the rest in host memory), plus one group's MoE
  // buffers and one block of intermediate values; weights come on top.
  size_t activation_bytes(size_t tokens, size_t chunk_tokens, size_t longest_sequence,
                          bool host_held = false, size_t group_tokens = 0) const;
  // The most float32 weight bytes decoded at once: resident, one block (a layer's attention, its
  // dense MLP, or one expert and the shared expert; or lm_head at the end); host_held, all blocks
  // of a layer at once (attention + dense MLP or one expert and the shared expert).
  size_t peak_weight_bytes(bool host_held = false) const;

 private:
  const Checkpoint& ckpt_;
  ModelSpec spec_;
  friend class ForwardPass;
  std::shared_ptr<Backend> be_;
};

// One forward pass driven a layer at a time (Engine::run is: construct, every layer in order,
// finish). `quantize --gptq --data` runs a layer, quantizes it, and may run it again from the
// same input with the quantized weights (save / restore).
class ForwardPass {
 public:
  // `logits`: finish() will be called (lm_head is prefetched after the last layer).
  ForwardPass(const Engine& engine, const std::vector<std::vector<int32_t>>& sequences,
              const ForwardOptions& opt, bool logits = false);
  ~ForwardPass();
  // Runs layer `layer` over the hidden states (hidden += its blocks' outputs).
  void run_layer(size_t layer, ActivationObserver* observer);
  // Keeps a copy of the hidden states (where they live: backend or host memory); restore() puts
  // it back.
  void save();
  void restore();
  // The final norm and lm_head, one sequence at a time.
  void finish(const LogitsSink& sink);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The checkpoint tensors of layer `li` (the names under its prefix), sorted: what the run asks
// the backend to prefetch while the layer before computes.
std::vector<std::string> layer_tensors(const Checkpoint& ckpt, const ModelSpec& spec, size_t li);

// Greedy continuation (argmax, no sampling) of `prompt` for `steps` tokens, recomputing the
// whole sequence each step (no KV cache: meant for tests on small models).
std::vector<int32_t> greedy_generate(const Engine& engine, std::vector<int32_t> prompt,
                                     size_t steps);

}  // namespace fp4kit::engine
