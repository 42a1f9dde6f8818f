#pragma once
// Token data for calibrate and eval: pre-tokenized ids need no tokenizer; plain text and JSONL are
// encoded with the model's own tokenizer.json (text layer).
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fp4kit/text/calibration_data.hpp"
#include "fp4kit/text/token_reader.hpp"
#include "fp4kit/text/tokenizer.hpp"

namespace fp4kit::engine {

// N x L calibration windows (text layer's deterministic choice).
text::CalibrationSamples load_calibration_windows(const std::filesystem::path& data,
                                                  const std::filesystem::path& model_dir,
                                                  const text::CalibrationOptions& options);

// Perplexity windows of `data` (token_windows.hpp's rule: window i = stream[ctx*i : ctx*i + ctx+1])
// read and encoded as they are taken, so memory follows a window, not the file. max_windows,
// max_tokens (the first N tokens only): 0 = no limit.
class EvalWindowReader {
 public:
  EvalWindowReader(const std::filesystem::path& data, const std::filesystem::path& model_dir,
                   const text::CalibrationOptions& options, size_t ctx, size_t max_windows,
                   size_t max_tokens);
  ~EvalWindowReader();
  // The next window (at least 2 tokens) into `window`; false when the data has no more.
  bool next(std::vector<int32_t>& window);
  uint64_t forced_cuts() const;  // text/token_reader.hpp

 private:
  std::optional<text::Tokenizer> tokenizer_;
  std::unique_ptr<text::TokenReader> reader_;
  size_t ctx_, max_windows_, tokens_left_, windows_ = 0;
  int32_t last_ = 0;  // the previous window's last token starts the next one
};

}  // namespace fp4kit::engine
