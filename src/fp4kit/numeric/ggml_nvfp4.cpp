#include "fp4kit/numeric/ggml_nvfp4.hpp"

#include <cstdio>
#include <string>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {

void repack_nvfp4_to_ggml(const uint8_t* packed, const uint8_t* scales, uint64_t rows,
                          uint64_t cols, uint8_t* out, const uint64_t* row_of) {
  if (cols % 64 != 0)
    throw Error("NVFP4 for llama.cpp needs a row length that is a multiple of 64, got " +
                std::to_string(cols));
  const uint64_t supers = cols / 64;
  parallel_for(0, rows, 256, [&](size_t lo, size_t hi) {
    for (uint64_t r = lo; r < hi; ++r) {
      const uint64_t src = row_of ? row_of[r] : r;
      const uint8_t* p = packed + src * (cols / 2);
      const uint8_t* s = scales + src * (cols / 16);
      uint8_t* o = out + r * supers * 36;
      for (uint64_t b = 0; b < supers; ++b, o += 36) {
        for (int j = 0; j < 4; ++j) {
          const uint8_t sc = s[b * 4 + j];
          if ((sc & 0x80 && sc != 0x80) || sc == 0x7F) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "0x%02X", sc);
            throw Error("row " + std::to_string(src) + ", block of 16 #" +
                        std::to_string(b * 4 + j) + ": scale byte " + hex + " is " +
                        (sc == 0x7F ? "NaN" : "negative") +
                        " (an NVFP4 block scale is a non-negative finite E4M3)");
          }
          o[j] = sc & 0x7F;
        }
        for (int sb = 0; sb < 4; ++sb) {
          const uint8_t* in = p + b * 32 + sb * 8;  // 16 codes, 2 per byte, low nibble first
          for (int j = 0; j < 8; ++j) {
            const uint8_t low = (j % 2 == 0 ? in[j / 2] : in[j / 2] >> 4) & 0x0F;
            const uint8_t high = ((j % 2 == 0 ? in[4 + j / 2] : in[4 + j / 2] >> 4)) & 0x0F;
            o[4 + sb * 8 + j] = static_cast<uint8_t>(low | high << 4);
          }
        }
      }
    }
  });
}

}  // namespace fp4kit
