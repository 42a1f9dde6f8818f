#pragma once
// Checks a GGUF file holding NVFP4 tensors as llama.cpp would load it: the header parses, every
// tensor lies inside the file, aligned and apart from the others; every GGML_TYPE_NVFP4 weight
// has its F32 ".scale" ([1], or [E] for stacked experts) with positive finite values (without it
// llama.cpp runs the weight unscaled); NVFP4 block-scale bytes have bit 7 clear (llama.cpp's CPU
// decoder ignores it, the CUDA one reads it as a sign); the architecture, block count and
// tokenizer are there and the vocabulary matches token_embd.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace fp4kit::verify {

struct GgufFinding {
  bool error = true;  // false: a warning
  std::string tensor;
  std::string message;
};

struct GgufCheckResult {
  std::vector<GgufFinding> findings;
  uint64_t tensors = 0, nvfp4 = 0, scale_bytes = 0;
  bool ok() const;
  std::string format() const;  // one line per finding, then a summary line
};

// Throws fp4kit::Error when the file cannot be read as GGUF at all.
GgufCheckResult check_gguf(const std::filesystem::path& path);

}  // namespace fp4kit::verify
