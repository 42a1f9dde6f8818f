// Element-wise decoding of any floating dtype to float32.
#include "fp4kit/numeric/convert.hpp"

#include <cstring>
#include <string>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/formats.hpp"

namespace fp4kit {

namespace {
template <typename T, typename F>
void decode_each(const void* src, size_t count, float* dst, F f) {
  const auto* p = static_cast<const unsigned char*>(src);
  for (size_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));  // sources may be unaligned (mmap offsets)
    dst[i] = f(v);
  }
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
      decode_each<uint16_t>(src, count, dst, bf16_to_float);
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
