// Quantization error statistics; rows are cut into fixed chunks (not per thread) and merged in
// order, so the double sums do not depend on the thread count.
#include "fp4kit/numeric/distortion.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_checks.hpp"
#include "fp4kit/numeric/nvfp4_row_decode.hpp"
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

void detail::fold_row(const RowLanes& l, size_t cols, DistortionStats& out) {
  double row_ref = 0, row_err = 0, row_max = 0;
  uint64_t row_flips = 0, row_zeros = 0;
  for (size_t j = 0; j < kNvfp4Block; ++j) {
    row_ref += l.sum_sq_ref[j];
    row_err += l.sum_sq_err[j];
    row_max = std::max(row_max, static_cast<double>(l.max_abs_err[j]));
    row_flips += static_cast<uint64_t>(l.sign_flips[j]);
    row_zeros += static_cast<uint64_t>(l.rounded_to_zero[j]);
  }
  out.count += cols;
  out.sum_sq_ref += row_ref;
  out.sum_sq_err += row_err;
  out.max_abs_err = std::max(out.max_abs_err, row_max);
  out.sign_flips += row_flips;
  out.rounded_to_zero += row_zeros;
}

namespace {
// Statistics of one row, accumulated in 16 float lanes (one NVFP4 block wide) so the loop
// vectorizes (detail::fold_row says how they are summed).
void add_row(const float* ref, const float* q, size_t cols, DistortionStats& out) {
  constexpr size_t W = kNvfp4Block;
  detail::RowLanes l = {};
  for (size_t b = 0; b < cols; b += W) {
    for (size_t j = 0; j < W; ++j) {
      const float r = ref[b + j], v = q[b + j], e = v - r;
      l.sum_sq_ref[j] += r * r;
      l.sum_sq_err[j] += e * e;
      const float ae = std::fabs(e);
      l.max_abs_err[j] = ae > l.max_abs_err[j] ? ae : l.max_abs_err[j];
      // Branch-free counts (exact in float up to 2^24 per lane, far above any row length / 16).
      l.sign_flips[j] += ((r > 0.0f) & (v < 0.0f)) | ((r < 0.0f) & (v > 0.0f)) ? 1.0f : 0.0f;
      l.rounded_to_zero[j] += (r != 0.0f) & (v == 0.0f) ? 1.0f : 0.0f;
    }
  }
  detail::fold_row(l, cols, out);
}
}  // namespace

DistortionStats nvfp4_distortion(const void* src, DType dtype, size_t rows, size_t cols,
                                 const uint8_t* packed, const uint8_t* scales, float s2) {
  detail::check_nvfp4_args(dtype, cols, s2);
  constexpr size_t kChunkRows = detail::kDistortionChunkRows;
  const size_t nchunks = (rows + kChunkRows - 1) / kChunkRows;
  std::vector<DistortionStats> parts(nchunks);
  const size_t esize = dtype_size(dtype);
  const size_t nblocks = cols / kNvfp4Block;
  parallel_for(0, nchunks, 1, [&](size_t c0, size_t c1) {
    std::vector<float> ref(cols), q(cols);
    for (size_t c = c0; c < c1; ++c) {
      const size_t r1 = std::min(rows, (c + 1) * kChunkRows);
      for (size_t r = c * kChunkRows; r < r1; ++r) {
        detail::decode_row_f32(static_cast<const unsigned char*>(src) + r * cols * esize, dtype,
                               cols, ref.data());
        detail::nvfp4_dequantize_row(packed + r * (cols / 2), scales + r * nblocks, cols, s2,
                                     q.data());
        add_row(ref.data(), q.data(), cols, parts[c]);
      }
    }
  });
  DistortionStats total;
  for (const auto& p : parts) total.merge(p);
  return total;
}

namespace detail {

bool encode_row_chunks(size_t rows, size_t grain_rows,
                       const std::function<bool(size_t r0, size_t r1, DistortionStats& stats)>& encode,
                       DistortionStats& total) {
  constexpr size_t kChunk = kDistortionChunkRows;
  const size_t nchunks = (rows + kChunk - 1) / kChunk;
  std::vector<DistortionStats> parts(nchunks);
  std::atomic<bool> bad{false};
  parallel_for(0, nchunks, (grain_rows + kChunk - 1) / kChunk, [&](size_t c0, size_t c1) {
    for (size_t c = c0; c < c1 && !bad; ++c)
      if (!encode(c * kChunk, std::min(rows, (c + 1) * kChunk), parts[c])) bad = true;
  });
  if (bad) return false;
  total = DistortionStats{};
  for (const auto& p : parts) total.merge(p);
  return true;
}

}  // namespace detail

}  // namespace fp4kit
