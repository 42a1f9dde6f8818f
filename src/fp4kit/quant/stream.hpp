#pragma once
// Walks the plan entry by entry: views the source tensor, computes its fusion group's shared s2
// (once per group), quantizes on all cores, measures the error, and hands the bytes to a sink.
// Memory: one entry's output buffers at a time (plus what the sink keeps in flight).
#include <cstdint>
#include <functional>
#include <span>
#include <stdexcept>
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/nonfinite.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/block_scales.hpp"
#include "fp4kit/quant/quant_options.hpp"

namespace fp4kit {

struct QuantizedWeight {
  std::vector<uint8_t> packed;  // [rows, cols/2]
  std::vector<uint8_t> scales;  // [rows, cols/16] E4M3
  float s2 = 0;                 // weight_scale_2 (shared by the weight group)
  float input_scale = 0;        // 0 when weights-only
};

class EntrySink {
 public:
  virtual ~EntrySink() = default;
  virtual void quantized(size_t entry, QuantizedWeight&& weight) = 0;
  // `bytes` stays valid until the source checkpoint is closed.
  virtual void copied(size_t entry, std::span<const uint8_t> bytes) = 0;
  // A BMM 3-D expert entry (spec 4), streamed so that memory holds one expert's packed bytes,
  // not the tensor's: bmm_begin once (s2 and input_scale are known before any expert), then
  // bmm_packed for experts 0..E-1 in order ([K/2, N] bytes each, `last` on E-1), then bmm_scales
  // with the whole [E, K/16, N] scale tensor (1/8 of the packed size).
  virtual void bmm_begin(size_t entry, float s2, float input_scale) {
    (void)entry, (void)s2, (void)input_scale;
    throw std::logic_error("this sink cannot take BMM expert entries");
  }
  virtual void bmm_packed(size_t entry, std::vector<uint8_t>&& packed, bool last) {
    (void)entry, (void)packed, (void)last;
    throw std::logic_error("this sink cannot take BMM expert entries");
  }
  virtual void bmm_scales(size_t entry, std::vector<uint8_t>&& scales) {
    (void)entry, (void)scales;
    throw std::logic_error("this sink cannot take BMM expert entries");
  }
  // A Dequantize entry: the whole tensor as BF16 bytes (FP8 source written unquantized).
  virtual void dequantized(size_t entry, std::vector<uint8_t>&& bf16) {
    (void)entry, (void)bf16;
    throw std::logic_error("this sink cannot take dequantized tensors");
  }
};

struct EntryResult {
  size_t entry = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  float amax = 0, s2 = 0, input_scale = 0;
  DistortionStats error;  // quantized entries only
  ScaleOutcome scales;    // quantized entries only: the block-scale method used, and why not
  // Kept and dequantized entries: NaN/Inf values written unchanged (a loader computes with them).
  NonFiniteCount nonfinite;
  double seconds = 0;
};

using StreamProgress = std::function<void(size_t done, size_t total, const EntryResult&)>;

// `order`: entry indices in output order (Drop entries are skipped). `input_scales` indexed by
// Plan::groups (ignored when weights-only). Errors name the module and the source tensor.
std::vector<EntryResult> run_stream(const Plan& plan, const Checkpoint& source,
                                    const std::vector<size_t>& order,
                                    const std::vector<float>& input_scales,
                                    const QuantOptions& options, EntrySink& sink,
                                    const StreamProgress& progress);

}  // namespace fp4kit
