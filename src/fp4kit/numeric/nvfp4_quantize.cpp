// nvfp4_quantize: rows split across threads; each row range runs the SIMD kernel (BF16, F16, F32)
// or, for other float dtypes, the scalar reference. Rows are independent, so the bytes never
// depend on how rows are split. With error statistics, the split is in whole chunks of
// kDistortionChunkRows rows and the chunks are merged in order, as nvfp4_distortion does.
#include <algorithm>
#include <atomic>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_checks.hpp"
#include "fp4kit/numeric/nvfp4_simd.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {

namespace {
void quantize(const void* src, DType dtype, size_t rows, size_t cols, float s2, uint8_t* packed,
              uint8_t* scales, DistortionStats* error) {
  detail::check_nvfp4_args(dtype, cols, s2);
  const size_t esize = dtype_size(dtype);
  const bool simd = detail::nvfp4_simd_supports(dtype);
  std::atomic<bool> bad{false};
  // About 64 KiB of input per task: enough to amortize scheduling, small enough to balance.
  const size_t grain = 1 + (size_t{1} << 16) / (cols * esize + 1);
  if (error && simd) {
    const bool ok = detail::encode_row_chunks(rows, grain, [&](size_t r0, size_t r1, DistortionStats& st) {
      return detail::nvfp4_quantize_rows_simd(static_cast<const unsigned char*>(src) + r0 * cols * esize,
                                              dtype, r1 - r0, cols, s2, packed + r0 * (cols / 2),
                                              scales + r0 * (cols / kNvfp4Block), &st);
    }, *error);
    if (!ok) detail::throw_nonfinite(src, dtype, rows, cols);
    return;
  }
  parallel_for(0, rows, grain, [&](size_t r0, size_t r1) {
    const auto* in = static_cast<const unsigned char*>(src) + r0 * cols * esize;
    uint8_t* p = packed + r0 * (cols / 2);
    uint8_t* s = scales + r0 * (cols / kNvfp4Block);
    if (simd) {
      if (!detail::nvfp4_quantize_rows_simd(in, dtype, r1 - r0, cols, s2, p, s)) bad = true;
      return;
    }
    try {
      nvfp4_quantize_ref(in, dtype, r1 - r0, cols, s2, p, s);
    } catch (const Error&) {
      bad = true;  // re-reported below with the row index of the whole tensor
    }
  });
  if (bad) detail::throw_nonfinite(src, dtype, rows, cols);
  if (error) *error = nvfp4_distortion(src, dtype, rows, cols, packed, scales, s2);
}
}  // namespace

void nvfp4_quantize(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                    uint8_t* packed, uint8_t* scales) {
  quantize(src, dtype, rows, cols, s2, packed, scales, nullptr);
}

void nvfp4_quantize_with_error(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                               uint8_t* packed, uint8_t* scales, DistortionStats& error) {
  quantize(src, dtype, rows, cols, s2, packed, scales, &error);
}

}  // namespace fp4kit
