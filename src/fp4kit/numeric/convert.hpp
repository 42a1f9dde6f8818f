#pragma once
// Decoding buffers of any floating dtype to float32 (used by the stream and the engine).
#include <cstddef>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

// dst[i] = float(src[i]) for i < count. Throws fp4kit::Error for a non-float dtype.
void decode_to_f32(const void* src, DType dtype, size_t count, float* dst);

}  // namespace fp4kit
