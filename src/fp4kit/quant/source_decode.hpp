#pragma once
// The values of a planned entry as the quantizer reads them: plain float sources are viewed in
// place; FP8 block-scaled sources (NVFP4-SPEC.md section 8) are decoded to float32 into a buffer
// the caller reuses, so memory stays bounded by one tensor's float32 copy.
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/source_view.hpp"

namespace fp4kit {

// A view of the entry's [rows, cols] values: the source itself (BF16/F16/F32) or `buffer` (F32,
// resized as needed) for encoded sources. Errors name the module, the tensor and the scale tensor.
SourceView decoded_view(const Checkpoint& ckpt, const PlanEntry& entry, std::vector<float>& buffer);

// max |value| of the entry's [rows, cols] values; for FP8 sources computed from the codes and
// block scales without decoding (bit-identical to the max over decoded_view).
float source_amax(const Checkpoint& ckpt, const PlanEntry& entry);

// A Dequantize entry's whole tensor as BF16 bytes (round to nearest even), for writing.
std::vector<uint8_t> dequantize_to_bf16(const Checkpoint& ckpt, const PlanEntry& entry,
                                        std::vector<float>& buffer);

}  // namespace fp4kit
