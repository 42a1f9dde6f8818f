// count_nonfinite reads NaN/Inf from the bits; the reference decodes every value (decode_to_f32,
// or the double itself for F64) and asks std::isnan / std::isinf.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/nonfinite.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {
namespace {

NonFiniteCount reference(const std::vector<uint8_t>& bytes, DType dtype) {
  const size_t n = bytes.size() / dtype_size(dtype);
  NonFiniteCount c;
  for (size_t i = 0; i < n; ++i) {
    double v;
    if (dtype == DType::F64) {
      std::memcpy(&v, bytes.data() + i * 8, 8);
    } else {
      float f;
      decode_to_f32(bytes.data() + i * dtype_size(dtype), dtype, 1, &f);
      v = f;
    }
    c.nan += std::isnan(v);
    c.inf += std::isinf(v);
  }
  return c;
}

TEST(NonFinite, CountsEqualDecodingEveryValue) {
  std::mt19937_64 rng(7);
  for (DType d : {DType::BF16, DType::F16, DType::F32, DType::F64, DType::F8_E4M3, DType::F8_E5M2,
                  DType::F8_E8M0}) {
    // Random bits hit every code of the 8-bit types and many specials of the 16-bit ones; for
    // F32/F64 a share of the values get an all-ones exponent so both kinds occur.
    const size_t n = 50000, es = dtype_size(d);
    std::vector<uint8_t> b(n * es);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    if (es >= 4)
      for (size_t i = 0; i < n; i += 3) {
        uint8_t* top = b.data() + i * es + es - 2;  // little endian: the two top bytes
        top[1] |= 0x7F;
        top[0] |= es == 4 ? 0x80 : 0xF0;
        if (i % 2 == 0) std::memset(b.data() + i * es, 0, es - 2), top[0] &= es == 4 ? 0x80 : 0xF0;
      }
    const NonFiniteCount want = reference(b, d);
    const NonFiniteCount got = count_nonfinite(b.data(), d, n);
    EXPECT_EQ(got.nan, want.nan) << dtype_name(d);
    EXPECT_EQ(got.inf, want.inf) << dtype_name(d);
    if (d != DType::F8_E4M3 && d != DType::F8_E8M0) EXPECT_GT(want.inf, 0u) << dtype_name(d);
    EXPECT_GT(want.nan, 0u) << dtype_name(d);
  }
  const std::vector<uint8_t> ints(64, 0xFF);
  EXPECT_EQ(count_nonfinite(ints.data(), DType::I32, 16).total(), 0u);
}

TEST(NonFinite, LargeTensorsSplitAcrossThreadsCountTheSame) {
  // Over the one-thread grain (2^20 elements): the parallel sum equals the sequential one.
  const size_t n = (size_t{3} << 20) + 17;
  std::vector<uint16_t> v(n, 0x3F80);  // bf16 1.0
  for (size_t i = 5; i < n; i += 99991) v[i] = (i % 2) ? 0x7F80 : 0xFFC1;  // +Inf / NaN
  size_t nan = 0, inf = 0;
  for (size_t i = 5; i < n; i += 99991) ((i % 2) ? inf : nan) += 1;
  const NonFiniteCount c = count_nonfinite(v.data(), DType::BF16, n);
  EXPECT_EQ(c.nan, nan);
  EXPECT_EQ(c.inf, inf);
}

}  // namespace
}  // namespace fp4kit
