#pragma once
// Which tensors the output holds, in which order, under which names: spec sections 5 (format A,
// ModelOpt) and 6 (format B, compressed-tensors). Decided from the plan before writing starts.
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/quant_options.hpp"

namespace fp4kit {

enum class OutputPart {
  Copy,         // a kept tensor, byte for byte
  Dequantized,  // a kept FP8 block-scaled tensor, written as BF16 (Action::Dequantize)
  Weight,       // A: <m>.weight U8 [N, K/2]        B: <m>.weight_packed
  WeightScale,  // A/B: <m>.weight_scale F8_E4M3 [N, K/16]
  GlobalScale,  // A: <m>.weight_scale_2 F32 []     B: <m>.weight_global_scale F32 [1] = 1/s2
  InputScale,   // A: <m>.input_scale F32 []        B: <m>.input_global_scale F32 [1] = 1/scale
};

struct OutputTensor {
  TensorSpec spec;
  size_t entry = 0;  // index into Plan::entries
  OutputPart part = OutputPart::Copy;
};

// Entries in name order; each entry's tensors consecutive. Drop entries produce nothing.
std::vector<OutputTensor> output_layout(const Plan& plan, const Checkpoint& source,
                                        const QuantOptions& options);

std::vector<TensorSpec> specs_of(const std::vector<OutputTensor>& layout);

}  // namespace fp4kit
