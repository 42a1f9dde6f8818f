#pragma once
// The files `fp4kit demo` needs, built into the executable from data/demo/ (see its README.md
// for where each comes from and its licence), so the demo needs nothing beside the binary.
#include <cstdint>
#include <span>
#include <string_view>

namespace fp4kit::cli {

struct DemoAsset {
  std::string_view name;  // file name in data/demo/
  std::span<const uint8_t> bytes;
};

// stories260K.bin, tokenizer.json, LICENSE-llama2.c, tinystories-eval.txt,
// tinystories-calib.txt, README.md.
std::span<const DemoAsset> demo_assets();
// Throws fp4kit::Error for an unknown name.
std::span<const uint8_t> demo_asset(std::string_view name);

}  // namespace fp4kit::cli
