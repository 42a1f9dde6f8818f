#pragma once
// What the numeric checks compare a quantized tensor's error with (internal to verify): the error
// a correct round-to-nearest encoding of the same source values has. Shared by the 2-D module path
// (numeric_checks.cpp) and the 3-D BMM expert path (bmm_numeric.cpp).
#include <cstdint>
#include <optional>
#include <string>

#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/dtype.hpp"
#include "fp4kit/verify/verify.hpp"

namespace fp4kit::verify {

struct Reference {
  double rel_rmse = 0;
  float s2 = 0;  // the global scale of the tensor's own amax
};

// The error a correct round-to-nearest encoding of this very matrix has (s2 from its own amax).
// nullopt when the source holds NaN/Inf (no reference).
std::optional<Reference> reference_encoding(const void* src, DType dtype, uint64_t rows,
                                            uint64_t cols);

// Why a tensor may be far off although its bytes are a correct encoding: a global scale shared
// with much larger fusion-group members (or experts) pushes its block scales to the E4M3 floor
// (2^-9). "" when that is not the case.
std::string shared_scale_hint(float s2, const std::optional<Reference>& ref);

// Copies the distortion statistics into a report row.
void fill_error_stats(const DistortionStats& d, TensorErrorStats& st);

// A tensor whose relative RMSE is above the threshold is only broken if it is also clearly worse
// than round-to-nearest of the same source (1.25x): otherwise the source is a hard distribution.
inline bool within_reference(double rel_rmse, const std::optional<Reference>& ref) {
  return ref && rel_rmse <= 1.25 * ref->rel_rmse;
}

}  // namespace fp4kit::verify
