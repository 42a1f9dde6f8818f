// Property tests (rapidcheck): dequantize(quantize(x)) stays within the per-block error bound of
// NVFP4, and the block scale is the one the format promises (max element maps near 6).
#include <gtest/gtest.h>

#ifdef FP4KIT_HAVE_RAPIDCHECK
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"

namespace fp4kit {
namespace {

// Half the distance to the next E2M1 value at magnitude y (the worst rounding error there).
double half_step(double y) { return y <= 2 ? 0.25 : (y <= 4 ? 0.5 : 1.0); }

struct Matrix {
  size_t rows, cols;
  std::vector<float> v;
};

// Rows of blocks whose magnitudes spread over +-2^60 between blocks, with zero elements, zero
// blocks, float subnormals and exact grid points mixed in.
rc::Gen<Matrix> gen_matrix() {
  return rc::gen::exec([] {
    Matrix m;
    m.rows = *rc::gen::inRange<size_t>(1, 4);
    m.cols = 16 * *rc::gen::inRange<size_t>(1, 7);
    m.v.resize(m.rows * m.cols);
    for (size_t b = 0; b < m.v.size() / 16; ++b) {
      const int kind = *rc::gen::inRange(0, 10);
      const int exp = *rc::gen::inRange(-60, 61);
      for (size_t i = 0; i < 16; ++i) {
        float x;
        if (kind == 0) {
          x = 0.0f;  // all-zero block
        } else if (kind == 1) {
          x = std::ldexp(static_cast<float>(*rc::gen::inRange(-7, 8)), -149);  // float subnormals
        } else if (kind == 2) {
          x = std::ldexp(static_cast<float>(*rc::gen::inRange(-12, 13)) * 0.5f, exp);  // grid points
        } else {
          const int mant = *rc::gen::inRange(-(1 << 24), (1 << 24) + 1);
          x = (*rc::gen::inRange(0, 8) == 0) ? 0.0f : std::ldexp(static_cast<float>(mant), exp - 24);
        }
        m.v[b * 16 + i] = x;
      }
    }
    return m;
  });
}

void check_roundtrip(const Matrix& m, float s2) {
  const size_t nb = m.cols / 16;
  std::vector<uint8_t> packed(m.rows * m.cols / 2), scales(m.rows * nb);
  nvfp4_quantize(m.v.data(), DType::F32, m.rows, m.cols, s2, packed.data(), scales.data());
  std::vector<float> w(m.v.size());
  nvfp4_dequantize(packed.data(), scales.data(), m.rows, m.cols, s2, w.data());
  for (size_t r = 0; r < m.rows; ++r)
    for (size_t b = 0; b < nb; ++b) {
      const uint8_t sf = scales[r * nb + b];
      RC_ASSERT(sf >= 0x01);
      RC_ASSERT(sf <= 0x7E);  // positive, finite, never NaN
      const double d = static_cast<double>(e4m3_to_float(sf)) * s2;
      double bamax = 0;
      for (size_t i = 0; i < 16; ++i) {
        const size_t k = r * m.cols + b * 16 + i;
        const double x = m.v[k], q = w[k];
        bamax = std::max(bamax, std::fabs(x));
        // Inside the grid the error is at most half a step; beyond 6 the code saturates, and
        // how far beyond 6 a block can reach is bounded by the scale checks below.
        const double y = std::fabs(x) / d;
        const double bound = (y <= 6 ? half_step(y) * d : std::fabs(x) - 6 * d) +
                             1e-6 * (std::fabs(x) + std::fabs(q)) + 1e-44;
        RC_ASSERT(std::fabs(x - q) <= bound);
        RC_ASSERT(!(x > 0 && q < 0) && !(x < 0 && q > 0));
      }
      const double s = bamax / (6.0 * s2);
      if (bamax == 0) {
        RC_ASSERT(sf == 0x38);
      } else if (s >= 0x1p-6 * 1.07 && s <= 448 / 1.07) {
        // Normal, unclamped scale: E4M3 rounding moves s by at most 2^-4 relative, so the block
        // maximum lands within 6 * (1 +- 2^-4) grid units.
        const double top = bamax / d;
        RC_ASSERT(top >= 6.0 / (1 + 0x1p-4) * (1 - 1e-6));
        RC_ASSERT(top <= 6.0 / (1 - 0x1p-4) * (1 + 1e-6));
      } else if (s >= 0x1p-9 && s < 0x1p-6) {
        // Subnormal scale: s moves by at most half its quantum 2^-9.
        const double sfv = e4m3_to_float(sf), top = bamax / d;
        RC_ASSERT(top >= 6.0 * (1 - 0x1p-10 / sfv) * (1 - 1e-6));
        RC_ASSERT(top <= 6.0 * (1 + 0x1p-10 / sfv) * (1 + 1e-6));
      }
    }
}

RC_GTEST_PROP(Nvfp4Property, RoundTripWithinBlockBoundOwnScale, ()) {
  const Matrix m = *gen_matrix();
  const float amax = tensor_amax(m.v.data(), DType::F32, m.rows, m.cols);
  // A tensor of nothing but float subnormals has amax * R == 0: quantize rejects that s2 (tested
  // in nvfp4_ref_test), so it is no input for this property.
  RC_PRE(nvfp4_global_scale(amax) > 0.0f);
  check_roundtrip(m, nvfp4_global_scale(amax));
}

RC_GTEST_PROP(Nvfp4Property, RoundTripWithinBlockBoundSharedLargerScale, ()) {
  // A fusion group shares a larger s2: small blocks get clamped scales, the bound still holds.
  const Matrix m = *gen_matrix();
  const float amax = tensor_amax(m.v.data(), DType::F32, m.rows, m.cols);
  const int up = *rc::gen::inRange(0, 40);
  const float s2 = nvfp4_global_scale(std::ldexp(amax == 0 ? 1.0f : amax, up),
                                      *rc::gen::element(ScaleForm::Gpu, ScaleForm::Cpu));
  RC_PRE(s2 > 0.0f);
  check_roundtrip(m, s2);
}

}  // namespace
}  // namespace fp4kit

#else
TEST(Nvfp4Property, RapidcheckMissing) { GTEST_SKIP() << "SKIPPED: rapidcheck not found"; }
#endif
