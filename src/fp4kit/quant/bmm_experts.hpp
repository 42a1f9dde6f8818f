#pragma once
// BMM 3-D expert tensors (gpt-oss, Llama-4; NVFP4-SPEC.md section 4) as the stream reads and
// writes them. On disk: "<m>" [E, K, N] (BF16/F16/F32) or MXFP4 "<m>_blocks" [E, N, K/32, 16] +
// "<m>_scales" [E, N, K/32]. ModelOpt quantizes each expert's transpose [N, K] (blocks of 16 along
// K, the GEMM's input dimension) with ONE s2 for the whole tensor and writes the bytes transposed
// back: "<m>" U8 [E, K/2, N], "<m>_weight_scale" F8 [E, K/16, N]. Memory: one expert's [N, K]
// values at a time plus the output tensor.
#include <cstdint>
#include <functional>
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/block_scales.hpp"
#include "fp4kit/quant/source_view.hpp"

namespace fp4kit {

// Expert e's [N, K] values: a transposed copy of source[e] (same dtype) or the decoded MXFP4
// blocks (F32), in `buffer` (reused). Errors name the module and tensors.
SourceView bmm_expert_view(const Checkpoint& ckpt, const PlanEntry& entry, uint64_t expert,
                           std::vector<uint8_t>& buffer);

// max |w| over all experts (the one s2 of the tensor); MXFP4 from codes and scales, no decode.
float bmm_amax(const Checkpoint& ckpt, const PlanEntry& entry);

// Quantizes every expert with `s2`, in order: each expert's packed [K/2, N] bytes go to
// `on_expert` as soon as they are ready (so the caller can write them out), the scales into
// `scales` [E, K/16, N] (resized). Returns the error over all experts.
using BmmExpertBytes = std::function<void(uint64_t expert, std::vector<uint8_t>&& packed)>;
// Block scales by options.scales; hessian takes each expert's Hessian blocks and token count
// from the stats file under bmm_expert_stats_name(module, expert) (calibrate --hessian writes
// them); an expert without them uses mse, and `outcome` says how many experts did and why.
DistortionStats bmm_quantize(const Checkpoint& ckpt, const PlanEntry& entry, float s2,
                             const QuantOptions& options, ScaleOutcome& outcome,
                             const BmmExpertBytes& on_expert, std::vector<uint8_t>& scales);

// A kept MXFP4 expert tensor as BF16 [E, K, N] bytes (what transformers' dequantization gives).
std::vector<uint8_t> bmm_dequantize_to_bf16(const Checkpoint& ckpt, const PlanEntry& entry);

// out[c * rows + r] = in[r * cols + c] for elements of `elem` bytes, on all cores.
void transpose_bytes(const uint8_t* in, uint64_t rows, uint64_t cols, size_t elem, uint8_t* out);

}  // namespace fp4kit
