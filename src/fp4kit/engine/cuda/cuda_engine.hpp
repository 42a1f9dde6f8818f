#pragma once
// The forward pass on one CUDA GPU, layer by layer, with the CPU engine's semantics (forward.hpp):
// the next layer's weights are copied from the memory-mapped checkpoint through pinned buffers and
// uploaded on a copy stream while the current layer computes (two device weight buffers).
// BF16/F16/F32 weights travel as stored and are widened on the GPU just before their product;
// other storages (NVFP4, FP8 blocks, MXFP4) are decoded on the CPU by the loader thread (the same
// code as the CPU engine) and travel as float32. Products run through cuBLAS in TF32 (float32
// accumulation) or float32; everything else is float32 CUDA kernels (kernels.hpp); calibration
// statistics are reduced on the GPU and handed to the StatsCollector at the end.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/stats_collector.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine::cuda {

struct GpuOptions {
  int device = 0;
  bool tf32 = true;             // false: plain float32 products
  size_t block_tokens = 32768;  // tokens per block of whole sequences (attention, dense MLP, MoE)
};

// Device memory the run needs, stated before it starts and checked against free memory.
struct GpuMemoryPlan {
  size_t weight_buffers = 0;  // two layers' weights as uploaded (double buffering)
  size_t weight_scratch = 0;  // the widest linear widened to float32, lm_head included
  size_t activations = 0;     // hidden states, one block's intermediates, MoE slots, logits
  size_t total() const { return weight_buffers + weight_scratch + activations; }
};

class CudaEngine {
 public:
  CudaEngine(const Checkpoint& ckpt, const GpuOptions& options);
  ~CudaEngine();
  const ModelSpec& spec() const;
  // `longest` = the longest sequence; `logits`: whether a sink will be given.
  GpuMemoryPlan memory_plan(size_t tokens, size_t longest, bool logits) const;
  // Engine::run's contract (fresh sequences, logits per sequence in order); statistics, when
  // `stats` is not null, are those the CPU engine's observer would collect. Throws fp4kit::Error
  // when the plan does not fit in the device's free memory or a CUDA call fails.
  void run(const std::vector<std::vector<int32_t>>& sequences, const ForwardOptions& options,
           StatsCollector* stats, const LogitsSink& sink);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp4kit::engine::cuda
