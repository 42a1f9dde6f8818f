#include "fp4kit/quant/gptq.hpp"

#include <cmath>
#include <vector>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {
namespace {

// In-place Cholesky A = L L^T (lower, row-major n x n). False if A is not positive definite.
bool cholesky(std::vector<double>& a, size_t n) {
  for (size_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (size_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0) || !std::isfinite(d)) return false;
    d = std::sqrt(d);
    a[j * n + j] = d;
    for (size_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (size_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / d;
    }
    for (size_t k = j + 1; k < n; ++k) a[j * n + k] = 0.0;
  }
  return true;
}

// U upper with U^T U = H^-1 (GPTQ's "cholesky(cholesky_inverse(cholesky(H)), upper)").
bool inverse_cholesky_upper(std::vector<double> h, size_t n, std::vector<double>& u) {
  if (!cholesky(h, n)) return false;
  // Linv: inverse of the lower factor, column by column (forward substitution).
  std::vector<double> linv(n * n, 0.0);
  for (size_t c = 0; c < n; ++c) {
    linv[c * n + c] = 1.0 / h[c * n + c];
    for (size_t i = c + 1; i < n; ++i) {
      double s = 0;
      for (size_t k = c; k < i; ++k) s -= h[i * n + k] * linv[k * n + c];
      linv[i * n + c] = s / h[i * n + i];
    }
  }
  // H^-1 = Linv^T Linv.
  std::vector<double> inv(n * n, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j <= i; ++j) {
      double s = 0;
      for (size_t k = i; k < n; ++k) s += linv[k * n + i] * linv[k * n + j];
      inv[i * n + j] = inv[j * n + i] = s;
    }
  // Upper factor of H^-1: U = L'^T with L' L'^T = H^-1.
  if (!cholesky(inv, n)) return false;
  u.assign(n * n, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i; j < n; ++j) u[i * n + j] = inv[j * n + i];
  return true;
}

}  // namespace

std::string gptq_encode(const SourceView& v, float s2, const uint8_t* scales,
                        const std::vector<double>& xtx, const GptqOptions& o, uint8_t* packed) {
  const size_t n = v.cols, rows = v.rows;
  if (xtx.size() != n * n) return "X^T X has the wrong size";
  std::vector<double> h(xtx);
  double mean_diag = 0;
  for (size_t i = 0; i < n; ++i) mean_diag += h[i * n + i];
  mean_diag /= static_cast<double>(n);
  if (!(mean_diag > 0)) return "X^T X has no positive diagonal (no calibration token)";
  for (size_t i = 0; i < n; ++i) {
    if (h[i * n + i] == 0.0) h[i * n + i] = mean_diag;  // a dead channel: no feedback through it
    h[i * n + i] += o.damp * mean_diag;
  }
  std::vector<double> u;
  if (!inverse_cholesky_upper(std::move(h), n, u))
    return "X^T X is not positive definite after dampening";
  const size_t nb = n / kNvfp4Block;
  const size_t esize = dtype_size(v.dtype);
  parallel_for(0, rows, 1, [&](size_t r0, size_t r1) {
    std::vector<float> row(n);
    std::vector<double> w(n);
    for (size_t r = r0; r < r1; ++r) {
      decode_to_f32(v.data + r * n * esize, v.dtype, n, row.data());
      for (size_t c = 0; c < n; ++c) w[c] = row[c];
      uint8_t* out = packed + r * (n / 2);
      for (size_t c = 0; c < n; ++c) {
        const float sv = e4m3_to_float(scales[r * nb + c / kNvfp4Block]);
        const float d = sv * s2;
        // The code of the error-updated weight, saturating at +-6 (the block scale is fixed).
        const uint8_t code = float_to_e2m1(static_cast<float>(w[c]) / d);
        const double deq = static_cast<double>((e2m1_to_float(code) * sv) * s2);
        const double e = (w[c] - deq) / u[c * n + c];
        const double* uc = u.data() + c * n;
        for (size_t k = c + 1; k < n; ++k) w[k] -= e * uc[k];
        if (c % 2 == 0) out[c / 2] = code;
        else out[c / 2] = static_cast<uint8_t>(out[c / 2] | (code << 4));
      }
    }
  });
  return "";
}

}  // namespace fp4kit
