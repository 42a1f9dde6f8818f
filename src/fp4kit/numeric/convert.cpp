// Element-wise decoding of any floating dtype to float32.
#include "fp4kit/numeric/convert.hpp"

#include <cstring>
#include <string>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {

namespace {
template <typename T, typename F>
void decode_each(const void* src, size_t count, float* dst, F f) {
  const auto* p = static_cast<const unsigned char*>(src);
  // Large tensors (the engine decodes a layer's weights while every other thread waits) on all
  // threads; each element is decoded on its own, so the bytes are the same.
  parallel_for(0, count, size_t{1} << 18, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      T v;
      std::memcpy(&v, p + i * sizeof(T), sizeof(T));  // sources may be unaligned (mmap offsets)
      dst[i] = f(v);
    }
  });
}

// bf16 is the top half of a float32 (inline: the loop vectorises).
inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = uint32_t{b} << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace

void decode_to_f32(const void* src, DType dtype, size_t count, float* dst) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::F64:
      decode_each<double>(src, count, dst, [](double v) { return static_cast<float>(v); });
      return;
    case DType::BF16:
      decode_each<uint16_t>(src, count, dst, [](uint16_t b) { return bf16_bits_to_float(b); });
      return;
    case DType::F16:
      decode_each<uint16_t>(src, count, dst, fp16_to_float);
      return;
    case DType::F8_E4M3:
      decode_each<uint8_t>(src, count, dst, e4m3_to_float);
      return;
    case DType::F8_E5M2:
      decode_each<uint8_t>(src, count, dst, e5m2_to_float);
      return;
    case DType::F8_E8M0:
      decode_each<uint8_t>(src, count, dst, e8m0_to_float);
      return;
    default:
      throw Error("decode_to_f32: dtype " + std::string(dtype_name(dtype)) +
                  " is not a floating type");
  }
}

}  // namespace fp4kit
