#pragma once
// Input validation shared by the reference and the SIMD NVFP4 kernels (internal to numeric).
#include <cstddef>
#include <optional>
#include <utility>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit::detail {

// Throws fp4kit::Error unless cols % 16 == 0, the dtype is a float type and s2 is finite and > 0.
void check_nvfp4_args(DType dtype, size_t cols, float s2);

// Row and column of the first NaN/Inf in row-major order, if any (sequential scan).
std::optional<std::pair<size_t, size_t>> find_nonfinite(const void* src, DType dtype, size_t rows,
                                                        size_t cols);

// Throws the "NaN or Inf at row r, column c" error for the first non-finite element. Call only
// when the input is known to hold one.
[[noreturn]] void throw_nonfinite(const void* src, DType dtype, size_t rows, size_t cols);

}  // namespace fp4kit::detail
