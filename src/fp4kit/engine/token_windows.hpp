#pragma once
// Token streams for calibration and evaluation: pre-tokenized id files and the perplexity windows
// of shared/data/README.md ("PPL protocol").
#include <cstdint>
#include <filesystem>
#include <vector>

namespace fp4kit::engine {

// Little-endian uint16 (.u16) or uint32 (.u32) ids, no header. Throws fp4kit::Error for another
// extension, a missing file or a size that is not a whole number of ids.
std::vector<int32_t> read_token_ids(const std::filesystem::path& path);

// PPL windows: window i = stream[ctx*i : ctx*i + ctx + 1] (the last may be shorter; windows with
// fewer than 2 tokens are dropped). The model sees window[:-1] as a fresh sequence and is scored
// on window[1:]. max_windows = 0: all.
std::vector<std::vector<int32_t>> ppl_windows(const std::vector<int32_t>& stream, size_t ctx,
                                              size_t max_windows);

}  // namespace fp4kit::engine
