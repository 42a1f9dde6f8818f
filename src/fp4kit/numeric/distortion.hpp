#pragma once
// Error statistics of a quantized tensor against its source (gemma.cpp's DistortionStats idea):
// accumulated per thread, merged, reported as relative RMSE and SQNR.
#include <cstddef>
#include <cstdint>
#include <functional>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

struct DistortionStats {
  uint64_t count = 0;
  double sum_sq_ref = 0;     // sum of ref^2
  double sum_sq_err = 0;     // sum of (q - ref)^2
  double max_abs_err = 0;
  uint64_t sign_flips = 0;   // ref and q of opposite sign (both non-zero)
  uint64_t rounded_to_zero = 0;  // ref != 0, q == 0

  void add(float ref, float q);
  void merge(const DistortionStats& other);
  double rel_rmse() const;   // sqrt(sum_sq_err / sum_sq_ref); 0 when both are 0
  double sqnr_db() const;    // 10 log10(sum_sq_ref / sum_sq_err); +inf when exact
  // The tensor is lost, not merely rounded: a non-zero source whose encoding keeps less than
  // half of it (relative RMSE >= kDestroyedRelRmse; all values rounded to zero gives 1.0).
  // Correct NVFP4 rounding of real weights stays near 0.1 (verify's threshold is 0.22).
  static constexpr double kDestroyedRelRmse = 0.5;
  bool destroyed() const { return sum_sq_ref > 0 && rel_rmse() >= kDestroyedRelRmse; }
};

// Compares a source tensor with its NVFP4 encoding (dequantized on the fly), on all cores.
// nvfp4_quantize(..., &stats) gives the same numbers without the second pass.
DistortionStats nvfp4_distortion(const void* src, DType dtype, size_t rows, size_t cols,
                                 const uint8_t* packed, const uint8_t* scales, float s2);

namespace detail {
// How the statistics are summed, so that every path that computes them gets the same bits:
// each row in 16 float lanes (lane j holds the columns j, j + 16, j + 32, ... of the row, summed
// in column order, products and sums never fused), the lanes folded into doubles in lane order,
// the rows summed in order within chunks of kDistortionChunkRows rows starting from zero, and the
// chunks merged in order.
inline constexpr size_t kDistortionChunkRows = 16;
struct RowLanes {
  float sum_sq_ref[16], sum_sq_err[16], max_abs_err[16], sign_flips[16], rounded_to_zero[16];
};
void fold_row(const RowLanes& lanes, size_t cols, DistortionStats& out);

// Runs encode(r0, r1, stats) on all cores over the chunks of kDistortionChunkRows rows (tasks of
// about grain_rows rows; the stats of each chunk start from zero) and sets `total` to the chunk
// statistics merged in order. False, with `total` unspecified, when any call returned false.
bool encode_row_chunks(size_t rows, size_t grain_rows,
                       const std::function<bool(size_t r0, size_t r1, DistortionStats& stats)>& encode,
                       DistortionStats& total);
}  // namespace detail

}  // namespace fp4kit
