#pragma once
// --device auto|cpu|cuda[:N] of `calibrate` and `eval`: which backend runs the engine. `auto` takes
// CUDA device 0 when this build has the GPU backend and a device is there, the CPU otherwise, and
// says which and why; an explicit `cuda` that cannot be honoured is an error, never a fall-back.
#include <functional>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "fp4kit/engine/evaluate.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/stats_collector.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::cli {

struct Device {
  bool cuda = false;
  int index = 0;
  std::string description;  // printed as "device: ..."
};

// Validates the syntax (CLI11 turns a failure into a usage error, exit 2).
CLI::Validator device_validator();
// Resolves auto and checks that the device exists; throws fp4kit::Error otherwise.
Device resolve_device(const std::string& arg, bool gpu_fp32);

// The forward pass on the chosen device, for calibration (statistics) or logits.
class Forward {
 public:
  Forward(const Device& d, const Checkpoint& ckpt, bool gpu_fp32);
  ~Forward();
  const engine::ModelSpec& spec() const;
  // One line about the memory the run will take: the plan, resident or host-held (the hidden
  // states between layers in host memory, one group of tokens at a time on the device), which
  // and why. On a GPU it is checked against free memory (FP4KIT_GPU_MEMORY_LIMIT caps it): the
  // hidden states stay resident when that fits, else host-held, else an error naming the
  // numbers. FP4KIT_ACTIVATIONS=resident|host forces one (also on the CPU, for tests).
  std::string memory_line(size_t tokens, size_t chunk, size_t longest) const;
  // Runs with the plan's placement (ForwardOptions::host_activations).
  void run(const std::vector<std::vector<int32_t>>& seqs, const engine::ForwardOptions& opt,
           engine::StatsCollector* stats, const engine::LogitsSink& sink);

 private:
  struct Plan;
  Plan plan(size_t tokens, size_t chunk, size_t longest) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// For engine::EvalOptions::make_runner: empty on the CPU.
std::function<engine::EvalOptions::Runner(const Checkpoint&)> eval_runner(const Device& d,
                                                                          bool gpu_fp32);

}  // namespace fp4kit::cli
