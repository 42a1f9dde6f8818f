#include "fp4kit/numeric/nvfp4_checks.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/nvfp4.hpp"

namespace fp4kit::detail {

void check_nvfp4_args(DType dtype, size_t cols, float s2) {
  if (cols % kNvfp4Block != 0)
    throw Error("NVFP4: the input dimension K = " + std::to_string(cols) +
                " is not a multiple of 16 (blocks are 16 elements along K); this tensor cannot be "
                "quantized");
  if (!dtype_is_float(dtype))
    throw Error("NVFP4: cannot quantize dtype " + std::string(dtype_name(dtype)) +
                " (a float type is required)");
  if (s2 == 0.0f)
    throw Error("NVFP4: the per-tensor scale s2 is 0: the tensor (or fusion group) amax is so small "
                "(below 2688 * FLT_MIN) that s2 underflows; such a tensor cannot be quantized");
  if (!std::isfinite(s2) || !(s2 > 0.0f))
    throw Error("NVFP4: the per-tensor scale s2 = " + std::to_string(s2) +
                " must be finite and > 0");
}

std::optional<std::pair<size_t, size_t>> find_nonfinite(const void* src, DType dtype, size_t rows,
                                                        size_t cols) {
  const size_t esize = dtype_size(dtype);
  const auto* base = static_cast<const unsigned char*>(src);
  std::vector<float> row(cols);
  for (size_t r = 0; r < rows; ++r) {
    decode_to_f32(base + r * cols * esize, dtype, cols, row.data());
    for (size_t c = 0; c < cols; ++c)
      if (!std::isfinite(row[c])) return std::make_pair(r, c);
  }
  return std::nullopt;
}

void throw_nonfinite(const void* src, DType dtype, size_t rows, size_t cols) {
  const auto where = find_nonfinite(src, dtype, rows, cols);
  if (!where) throw Error("NVFP4: internal error: non-finite input reported but not found");
  const size_t esize = dtype_size(dtype);
  float v;
  decode_to_f32(static_cast<const unsigned char*>(src) + (where->first * cols + where->second) * esize,
                dtype, 1, &v);
  throw Error(std::string("NVFP4: ") + (std::isnan(v) ? "NaN" : "Inf") + " in the input at row " +
              std::to_string(where->first) + ", column " + std::to_string(where->second) +
              ": NaN and Inf cannot be quantized");
}

}  // namespace fp4kit::detail
