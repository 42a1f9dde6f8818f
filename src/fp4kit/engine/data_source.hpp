#pragma once
// Token data for calibrate and eval: pre-tokenized ids need no tokenizer; plain text and JSONL are
// encoded with the model's own tokenizer.json (text layer).
#include <filesystem>
#include <string>
#include <vector>

#include "fp4kit/text/calibration_data.hpp"

namespace fp4kit::engine {

// N x L calibration windows (text layer's deterministic choice).
text::CalibrationSamples load_calibration_windows(const std::filesystem::path& data,
                                                  const std::filesystem::path& model_dir,
                                                  const text::CalibrationOptions& options);

// The whole token stream (documents concatenated) for perplexity windows.
std::vector<int32_t> load_eval_stream(const std::filesystem::path& data,
                                      const std::filesystem::path& model_dir,
                                      const text::CalibrationOptions& options);

}  // namespace fp4kit::engine
