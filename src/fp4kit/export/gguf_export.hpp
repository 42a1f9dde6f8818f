#pragma once
// `fp4kit quantize SRC OUT.gguf --format gguf`: one GGUF file llama.cpp runs, written in one
// streaming pass. Linears become GGML_TYPE_NVFP4 (numeric/ggml_nvfp4.hpp) with their global scale
// in an F32 "<name>.scale" tensor ([1], or [E] for experts stacked [E, N, K]) and, for W4A4,
// "<name>.input_scale" likewise; the global scale is never folded into the block scales. Kept
// tensors go out as llama.cpp's converter stores them: norms, routers and 1-D tensors F32, the
// rest in the source's BF16/F16/F32 (FP8 and MXFP4 sources as BF16). The caller writes into a
// partial file and renames it when this returns.
#include <filesystem>
#include <string>
#include <vector>

#include "fp4kit/export/checkpoint_export.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/quant_options.hpp"
#include "fp4kit/quant/stream.hpp"

namespace fp4kit {

// The plan options --format gguf needs: linears quantize only with K % 64 == 0; the MLP of an
// architecture whose llama.cpp graph ignores its .scale stays unquantized (a rule, last).
void set_gguf_plan_options(PlanOptions& options, const ModelConfig& config,
                           const std::string& label);

// Quantizes `source` (BF16/FP16/FP32/FP8/MXFP4) as the plan says and writes `file`.
ExportResult export_gguf(const Plan& plan, const Checkpoint& source, const ModelConfig& config,
                         const std::vector<float>& input_scales, const QuantOptions& options,
                         const std::filesystem::path& file, const StreamProgress& progress);

// True when `source` holds NVFP4 linears (ModelOpt "<m>.weight" U8 or compressed-tensors
// "<m>.weight_packed", with a 2-D "<m>.weight_scale").
bool is_nvfp4_checkpoint(const Checkpoint& source);

struct RepackResult {
  size_t nvfp4 = 0;         // linears repacked bit for bit
  size_t dequantized = 0;   // NVFP4 linears whose K % 64 != 0, written as exact F32
  size_t plain = 0;         // other tensors
  uint64_t bytes_written = 0;
  std::vector<std::string> notes;  // one line per dequantized linear: name and why
};

// Repacks an NVFP4 checkpoint (ModelOpt or compressed-tensors) into `file` without
// requantizing: the same codes, block-scale bytes and global scales.
RepackResult repack_gguf(const Checkpoint& source, const ModelConfig& config,
                         const std::filesystem::path& file);

}  // namespace fp4kit
