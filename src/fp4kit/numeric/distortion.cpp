// Quantization error statistics; rows are cut into fixed chunks (not per thread) and merged in
// order, so the double sums do not depend on the thread count.
#include "fp4kit/numeric/distortion.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_checks.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {

void DistortionStats::add(float ref, float q) {
  const double r = ref, e = static_cast<double>(q) - r;
  ++count;
  sum_sq_ref += r * r;
  sum_sq_err += e * e;
  max_abs_err = std::max(max_abs_err, std::fabs(e));
  if ((ref > 0 && q < 0) || (ref < 0 && q > 0)) ++sign_flips;
  if (ref != 0 && q == 0) ++rounded_to_zero;
}

void DistortionStats::merge(const DistortionStats& o) {
  count += o.count;
  sum_sq_ref += o.sum_sq_ref;
  sum_sq_err += o.sum_sq_err;
  max_abs_err = std::max(max_abs_err, o.max_abs_err);
  sign_flips += o.sign_flips;
  rounded_to_zero += o.rounded_to_zero;
}

double DistortionStats::rel_rmse() const {
  if (sum_sq_err == 0) return 0.0;
  if (sum_sq_ref == 0) return std::numeric_limits<double>::infinity();
  return std::sqrt(sum_sq_err / sum_sq_ref);
}

double DistortionStats::sqnr_db() const {
  if (sum_sq_err == 0) return std::numeric_limits<double>::infinity();
  if (sum_sq_ref == 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(sum_sq_ref / sum_sq_err);
}

DistortionStats nvfp4_distortion(const void* src, DType dtype, size_t rows, size_t cols,
                                 const uint8_t* packed, const uint8_t* scales, float s2) {
  detail::check_nvfp4_args(dtype, cols, s2);
  constexpr size_t kChunkRows = 16;
  const size_t nchunks = (rows + kChunkRows - 1) / kChunkRows;
  std::vector<DistortionStats> parts(nchunks);
  const size_t esize = dtype_size(dtype);
  const size_t nblocks = cols / kNvfp4Block;
  parallel_for(0, nchunks, 1, [&](size_t c0, size_t c1) {
    std::vector<float> ref(cols), q(cols);
    for (size_t c = c0; c < c1; ++c) {
      const size_t r1 = std::min(rows, (c + 1) * kChunkRows);
      for (size_t r = c * kChunkRows; r < r1; ++r) {
        decode_to_f32(static_cast<const unsigned char*>(src) + r * cols * esize, dtype, cols,
                      ref.data());
        nvfp4_dequantize(packed + r * (cols / 2), scales + r * nblocks, 1, cols, s2, q.data());
        for (size_t i = 0; i < cols; ++i) parts[c].add(ref[i], q[i]);
      }
    }
  });
  DistortionStats total;
  for (const auto& p : parts) total.merge(p);
  return total;
}

}  // namespace fp4kit
