#include "fp4kit/verify/numeric_reference.hpp"

#include <fmt/core.h>

#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/nvfp4.hpp"

namespace fp4kit::verify {

std::optional<Reference> reference_encoding(const void* src, DType dtype, uint64_t rows,
                                            uint64_t cols) {
  try {
    const float s2 = nvfp4_global_scale(tensor_amax(src, dtype, rows, cols));
    std::vector<uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
    nvfp4_quantize(src, dtype, rows, cols, s2, packed.data(), scales.data());
    return Reference{
        nvfp4_distortion(src, dtype, rows, cols, packed.data(), scales.data(), s2).rel_rmse(), s2};
  } catch (const Error&) {
    return std::nullopt;  // NaN/Inf in the source: no reference
  }
}

std::string shared_scale_hint(float s2, const std::optional<Reference>& ref) {
  if (!ref || ref->s2 <= 0 || s2 < 16 * ref->s2) return "";
  return fmt::format("; its global scale {:.4g} is {:.3g}x what its own amax needs (a fusion group "
                     "shares it), so its block scales underflow E4M3: keep the group unquantized",
                     s2, s2 / ref->s2);
}

void fill_error_stats(const DistortionStats& d, TensorErrorStats& st) {
  st.rel_rmse = d.rel_rmse();
  st.sqnr_db = d.sqnr_db();
  st.max_abs_err = d.max_abs_err;
  st.count = d.count;
  st.sign_flips = d.sign_flips;
  st.rounded_to_zero = d.rounded_to_zero;
}

}  // namespace fp4kit::verify
