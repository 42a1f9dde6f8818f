#pragma once
// The [rows, cols] source values of one planned weight, as a view into the checkpoint's mapping
// (a 2-D tensor, or one expert's row range of a fused 3-D tensor: both are contiguous).
#include <cstdint>
#include <span>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/plan/plan.hpp"

namespace fp4kit {

struct SourceView {
  const uint8_t* data = nullptr;
  DType dtype = DType::BF16;
  uint64_t rows = 0, cols = 0;
};

// Throws fp4kit::Error when the slice does not fit the tensor's shape (names tensor and module).
SourceView source_view(const Checkpoint& ckpt, const PlanEntry& entry);

}  // namespace fp4kit
