#include "fp4kit/cli/demo_assets.hpp"

#include <string>

#include "fp4kit/error.hpp"

// Each file is placed in .rodata by the assembler (.incbin); FP4KIT_DEMO_DATA_DIR is set by
// src/fp4kit/CMakeLists.txt, which also makes this object depend on the files.
#define FP4KIT_EMBED(sym, file)                                                    \
  __asm__(".section .rodata\n"                                                     \
          ".balign 16\n"                                                           \
          ".globl " #sym "_begin\n" #sym "_begin:\n"                               \
          ".incbin \"" FP4KIT_DEMO_DATA_DIR "/" file "\"\n"                        \
          ".globl " #sym "_end\n" #sym "_end:\n"                                   \
          ".byte 0\n"                                                              \
          ".previous\n");                                                          \
  extern "C" const uint8_t sym##_begin[];                                          \
  extern "C" const uint8_t sym##_end[];

FP4KIT_EMBED(fp4kit_demo_model, "stories260K.bin")
FP4KIT_EMBED(fp4kit_demo_tokenizer, "tokenizer.json")
FP4KIT_EMBED(fp4kit_demo_license, "LICENSE-llama2.c")
FP4KIT_EMBED(fp4kit_demo_eval, "tinystories-eval.txt")
FP4KIT_EMBED(fp4kit_demo_calib, "tinystories-calib.txt")
FP4KIT_EMBED(fp4kit_demo_readme, "README.md")

namespace fp4kit::cli {

namespace {
std::span<const uint8_t> between(const uint8_t* b, const uint8_t* e) {
  return {b, static_cast<size_t>(e - b)};
}
}  // namespace

std::span<const DemoAsset> demo_assets() {
  static const DemoAsset assets[] = {
      {"stories260K.bin", between(fp4kit_demo_model_begin, fp4kit_demo_model_end)},
      {"tokenizer.json", between(fp4kit_demo_tokenizer_begin, fp4kit_demo_tokenizer_end)},
      {"LICENSE-llama2.c", between(fp4kit_demo_license_begin, fp4kit_demo_license_end)},
      {"tinystories-eval.txt", between(fp4kit_demo_eval_begin, fp4kit_demo_eval_end)},
      {"tinystories-calib.txt", between(fp4kit_demo_calib_begin, fp4kit_demo_calib_end)},
      {"README.md", between(fp4kit_demo_readme_begin, fp4kit_demo_readme_end)},
  };
  return assets;
}

std::span<const uint8_t> demo_asset(std::string_view name) {
  for (const auto& a : demo_assets())
    if (a.name == name) return a.bytes;
  throw Error("demo: no built-in file " + std::string(name));
}

}  // namespace fp4kit::cli
