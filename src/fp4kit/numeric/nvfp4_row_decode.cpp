#include "fp4kit/numeric/nvfp4_row_decode.hpp"

#include <array>
#include <cstring>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"

namespace fp4kit::detail {

namespace {
struct Tables {
  std::array<float, 256> e4m3;
  std::array<float, 16> e2m1;
  Tables() {
    for (int i = 0; i < 256; ++i) e4m3[i] = e4m3_to_float(static_cast<uint8_t>(i));
    for (int i = 0; i < 16; ++i) e2m1[i] = e2m1_to_float(static_cast<uint8_t>(i));
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}
}  // namespace

const float* e4m3_table() { return tables().e4m3.data(); }
const float* e2m1_table() { return tables().e2m1.data(); }

void nvfp4_dequantize_row(const uint8_t* packed, const uint8_t* scales, size_t cols, float s2,
                          float* out) {
  const float* e2m1 = e2m1_table();
  const float* e4m3 = e4m3_table();
  for (size_t b = 0; b < cols / kNvfp4Block; ++b) {
    const float sf = e4m3[scales[b]];
    const uint8_t* p = packed + b * (kNvfp4Block / 2);
    float* o = out + b * kNvfp4Block;
    for (size_t j = 0; j < kNvfp4Block / 2; ++j) {
      o[2 * j] = e2m1[p[j] & 0xF] * sf * s2;
      o[2 * j + 1] = e2m1[p[j] >> 4] * sf * s2;
    }
  }
}

void decode_row_f32(const void* src, DType dtype, size_t count, float* out) {
  const auto* p = static_cast<const unsigned char*>(src);
  if (dtype == DType::BF16) {
    for (size_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      const uint32_t u = uint32_t{h} << 16;
      std::memcpy(&out[i], &u, 4);
    }
    return;
  }
  decode_to_f32(src, dtype, count, out);
}

}  // namespace fp4kit::detail
