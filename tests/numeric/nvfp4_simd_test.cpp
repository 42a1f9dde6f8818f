// The SIMD kernel (every compiled Highway target) against the scalar reference, bit for bit, on
// random rows with planted E2M1 ties, E4M3 scale ties, subnormals, zeros, clamped scales and very
// wide ranges, in BF16, F16 and F32; and bytes independent of the thread count. The error
// statistics the kernel measures in the same pass equal nvfp4_distortion's second pass, bit for bit.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_simd.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "support/same_stats.hpp"

namespace fp4kit {
namespace {

constexpr float kTies[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};

struct Dataset {
  DType dtype;
  size_t rows, cols;
  float s2;
  std::vector<float> values;      // what the rows mean (before conversion to dtype)
  std::vector<uint8_t> bytes;     // the rows in dtype
};

// s2 = 2^e2: then d = e4m3 * s2 has <= 4 significant bits and t * d is exact for every tie t,
// so planted elements land exactly on x / d = t (also after rounding to bf16/fp16).
Dataset make_dataset(DType dtype, size_t rows, size_t cols, uint64_t seed, bool pow2_s2) {
  std::mt19937_64 rng(seed);
  auto uni = [&](int lo, int hi) { return static_cast<int>(lo + rng() % static_cast<uint64_t>(hi - lo + 1)); };
  const bool f16 = dtype == DType::F16;
  // Exponent ranges that stay finite in the dtype (fp16 tops out at 65504, bottoms at 2^-24).
  const int emin = f16 ? -22 : -60, emax = f16 ? 13 : 60;
  Dataset ds{dtype, rows, cols, 0.0f, std::vector<float>(rows * cols), {}};
  const float s2 = pow2_s2 ? std::ldexp(1.0f, f16 ? uni(-14, -4) : uni(-40, 20)) : 0.0f;
  for (size_t blk = 0; blk < rows * cols / 16; ++blk) {
    float* x = &ds.values[blk * 16];
    const int kind = uni(0, 9);
    const int e = uni(emin, emax);
    const int sfcode = uni(1, 126);  // the scale code planted-tie blocks are built on
    for (int i = 0; i < 16; ++i) {
      const float sign = (rng() & 1) ? -1.0f : 1.0f;
      switch (kind) {
        case 0:  // all zero (with -0.0)
          x[i] = (rng() & 1) ? -0.0f : 0.0f;
          break;
        case 1:  // subnormals of the dtype
          x[i] = sign * std::ldexp(static_cast<float>(uni(0, 127)),
                                   dtype == DType::F32 ? -149 : (f16 ? -24 : -133));
          break;
        case 2:  // very wide range inside one block
          x[i] = sign * std::ldexp(static_cast<float>(uni(1, 255)), uni(emin, emax - 8));
          break;
        case 3:
        case 4:
        case 5: {  // planted E2M1 ties (and their float neighbours) on a chosen scale code
          if (!pow2_s2) {
            x[i] = sign * std::ldexp(static_cast<float>(uni(0, 1 << 20)), e - 20);
            break;
          }
          const float d = e4m3_to_float(static_cast<uint8_t>(sfcode)) * s2;
          if (i == 0) {
            x[i] = 6.0f * d;  // block max: s = 6 d / (6 s2) = sf exactly -> scale code sfcode
          } else {
            const float t = kTies[uni(0, 6)];
            const int nudge = uni(0, 5);  // mostly exact ties, sometimes one ulp off
            float v = t * d;
            if (nudge == 4) v = std::nextafter(v, 0.0f);
            if (nudge == 5) v = std::nextafter(v, 1e30f);
            x[i] = sign * v;
          }
          break;
        }
        case 6: {  // planted E4M3 scale ties: bamax / (6 s2) exactly halfway between two codes
          if (!pow2_s2 || i != 0) {
            x[i] = sign * std::ldexp(static_cast<float>(uni(0, 255)), e - 8);
            break;
          }
          const int c = uni(0, 125);
          const float mid = (e4m3_to_float(static_cast<uint8_t>(c)) +
                             e4m3_to_float(static_cast<uint8_t>(c + 1))) / 2;
          x[i] = 6.0f * mid * s2;
          for (int j = 1; j < 16; ++j) x[j] = 0.0f;
          i = 16;
          break;
        }
        case 7:  // tiny next to a fixed larger s2 -> clamped scale 0x01
          x[i] = sign * std::ldexp(static_cast<float>(uni(0, 255)), emin);
          break;
        default:  // plain random values of one magnitude
          x[i] = sign * std::ldexp(static_cast<float>(uni(0, 1 << 23)), e - 23);
          break;
      }
    }
  }
  // Convert to the dtype; the meaning is then the converted value.
  const size_t n = rows * cols;
  ds.bytes.resize(n * dtype_size(dtype));
  for (size_t i = 0; i < n; ++i) {
    if (dtype == DType::F32) {
      std::memcpy(&ds.bytes[i * 4], &ds.values[i], 4);
    } else {
      uint16_t h = dtype == DType::BF16 ? float_to_bf16(ds.values[i]) : float_to_fp16(ds.values[i]);
      if (dtype == DType::F16 && (h & 0x7C00) == 0x7C00) h = (h & 0x8000) | 0x7BFF;  // keep finite
      std::memcpy(&ds.bytes[i * 2], &h, 2);
      ds.values[i] = dtype == DType::BF16 ? bf16_to_float(h) : fp16_to_float(h);
    }
  }
  if (pow2_s2) {
    ds.s2 = s2;
  } else {
    ds.s2 = nvfp4_global_scale(tensor_amax(ds.bytes.data(), dtype, rows, cols));
  }
  return ds;
}

struct Encoded {
  std::vector<uint8_t> packed, scales;
};

Encoded encode(const Dataset& ds, bool ref) {
  Encoded e{std::vector<uint8_t>(ds.rows * ds.cols / 2), std::vector<uint8_t>(ds.rows * ds.cols / 16)};
  (ref ? nvfp4_quantize_ref : nvfp4_quantize)(ds.bytes.data(), ds.dtype, ds.rows, ds.cols, ds.s2,
                                              e.packed.data(), e.scales.data());
  return e;
}

// First differing byte, for a readable failure.
void expect_same(const Encoded& want, const Encoded& got, const Dataset& ds, const std::string& what) {
  for (size_t i = 0; i < want.scales.size(); ++i)
    ASSERT_EQ(int(want.scales[i]), int(got.scales[i]))
        << what << ": scale of row " << i / (ds.cols / 16) << " block " << i % (ds.cols / 16);
  for (size_t i = 0; i < want.packed.size(); ++i)
    ASSERT_EQ(int(want.packed[i]), int(got.packed[i]))
        << what << ": byte " << i % (ds.cols / 2) << " of row " << i / (ds.cols / 2) << " (x = "
        << ds.values[2 * i] << ", " << ds.values[2 * i + 1] << ")";
}

// Exact E2M1 ties actually present (so the test cannot silently stop planting them).
size_t count_ties(const Dataset& ds, const Encoded& e) {
  size_t n = 0;
  for (size_t i = 0; i < ds.values.size(); ++i) {
    const float d = e4m3_to_float(e.scales[i / 16]) * ds.s2;
    const float y = std::fabs(ds.values[i] / d);
    for (float t : kTies) n += (y == t);
  }
  return n;
}

class Nvfp4Simd : public ::testing::TestWithParam<DType> {};
INSTANTIATE_TEST_SUITE_P(Dtypes, Nvfp4Simd,
                         ::testing::Values(DType::BF16, DType::F16, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// 3 dtypes x 400k rows = 1.2M random rows on the dispatched target (plus the per-target runs).
TEST_P(Nvfp4Simd, BestTargetMatchesReferenceOnManyRows) {
  std::cout << "SIMD target: " << detail::nvfp4_simd_target() << "\n";
  size_t ties = 0, rows = 0;
  int seed = 0;
  for (bool pow2 : {true, false}) {
    for (size_t cols : {32, 256}) {
      const size_t n_rows = cols == 256 ? 12'500 : (pow2 ? 200'000 : 175'000);
      const Dataset ds = make_dataset(GetParam(), n_rows, cols, 1000 + seed++, pow2);
      const Encoded want = encode(ds, true), got = encode(ds, false);
      expect_same(want, got, ds, "dispatched " + detail::nvfp4_simd_target());
      if (pow2) ties += count_ties(ds, want);
      rows += n_rows;
    }
  }
  EXPECT_EQ(rows, 400'000u);
  EXPECT_GT(ties, 100'000u) << "planted ties missing";
}

TEST_P(Nvfp4Simd, EveryCompiledTargetMatchesReference) {
  // 19 and 65 blocks per row: whole 16-block groups (the AVX-512 max tree) plus tails, and rows
  // longer than one 64-block chunk.
  const Dataset ds_ties = make_dataset(GetParam(), 3'200, 304, 7, true);
  const Dataset ds_rand = make_dataset(GetParam(), 1'000, 1040, 8, false);
  const Encoded want_ties = encode(ds_ties, true), want_rand = encode(ds_rand, true);
  const auto targets = detail::nvfp4_simd_targets();
  EXPECT_GE(targets.size(), 1u);
  for (int64_t t : targets) {
    hwy::SetSupportedTargetsForTest(t);
    const std::string name = detail::nvfp4_simd_target();
    std::cout << "checking target " << name << "\n";
    EXPECT_EQ(name, hwy::TargetName(t));
    expect_same(want_ties, encode(ds_ties, false), ds_ties, name);
    expect_same(want_rand, encode(ds_rand, false), ds_rand, name);
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST_P(Nvfp4Simd, BytesIndependentOfThreadCount) {
  const Dataset ds = make_dataset(GetParam(), 3000, 256, 99, false);
  set_thread_count(1);
  const Encoded one = encode(ds, false);
  set_thread_count(2);
  const Encoded two = encode(ds, false);
  set_thread_count(7);  // more threads than cores: oversubscribed splitting
  const Encoded seven = encode(ds, false);
  set_thread_count(0);
  const Encoded all = encode(ds, false);
  expect_same(one, two, ds, "1 vs 2 threads");
  expect_same(one, seven, ds, "1 vs 7 threads");
  expect_same(one, all, ds, "1 vs all threads");
  expect_same(encode(ds, true), one, ds, "reference vs 1 thread");
}

TEST(Nvfp4SimdShapes, LongRowsAndOddBlockCounts) {
  // Rows longer than one 64-block chunk, block counts not a multiple of the lane count.
  for (size_t cols : {16, 48, 1008, 1024, 1040, 4112}) {
    const Dataset ds = make_dataset(DType::BF16, 37, cols, cols, false);
    expect_same(encode(ds, true), encode(ds, false), ds, "cols " + std::to_string(cols));
  }
}

// The statistics measured inside the kernel (nvfp4_quantize_with_error) are the numbers of the
// separate pass that decodes the written codes again (nvfp4_distortion), to the last bit, on every
// target, dataset kind (ties, zeros, subnormals, values rounded to zero, sums that overflow to
// Inf), row count (not a multiple of the 16-row chunks) and thread count; and the codes written
// with statistics are the codes written without.
using test::expect_same_stats;

TEST_P(Nvfp4Simd, ErrorMeasuredInKernelEqualsSecondPass) {
  const Dataset sets[] = {make_dataset(GetParam(), 1'001, 304, 17, true),
                          make_dataset(GetParam(), 999, 1040, 18, false),
                          make_dataset(GetParam(), 5, 48, 19, false)};
  uint64_t zeros = 0;
  for (const Dataset& ds : sets) {
    const Encoded plain = encode(ds, false);
    const DistortionStats want = nvfp4_distortion(ds.bytes.data(), ds.dtype, ds.rows, ds.cols,
                                                  plain.packed.data(), plain.scales.data(), ds.s2);
    zeros += want.rounded_to_zero;
    auto fused = [&](const std::string& what) {
      Encoded e{std::vector<uint8_t>(ds.rows * ds.cols / 2),
                std::vector<uint8_t>(ds.rows * ds.cols / 16)};
      DistortionStats got;
      nvfp4_quantize_with_error(ds.bytes.data(), ds.dtype, ds.rows, ds.cols, ds.s2,
                                e.packed.data(), e.scales.data(), got);
      expect_same(plain, e, ds, what);
      expect_same_stats(want, got, what);
    };
    for (int64_t t : detail::nvfp4_simd_targets()) {
      hwy::SetSupportedTargetsForTest(t);
      fused(std::string("target ") + hwy::TargetName(t) + ", rows " + std::to_string(ds.rows));
    }
    hwy::SetSupportedTargetsForTest(0);
    for (int threads : {1, 3}) {
      set_thread_count(threads);
      fused(std::to_string(threads) + " threads, rows " + std::to_string(ds.rows));
    }
    set_thread_count(0);
  }
  EXPECT_GT(zeros, 100u) << "no values rounded to zero: the counts are not exercised";
}

// A real-looking BF16 weight (the stream's case), also with an s2 so large that every value
// rounds to zero even at the smallest block scale (a destroyed tensor: relative RMSE 1): in-kernel statistics equal the second pass.
TEST(Nvfp4SimdError, Bf16WeightsAndDestroyedTensor) {
  const size_t rows = 77, cols = 2048;
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 0.02f);
  std::vector<uint16_t> w(rows * cols);
  for (auto& v : w) v = float_to_bf16(n(rng));
  const float amax = tensor_amax(w.data(), DType::BF16, rows, cols);
  for (float s2 : {nvfp4_global_scale(amax), nvfp4_global_scale(amax * 1e9f)}) {
    std::vector<uint8_t> p(rows * cols / 2), s(rows * cols / 16);
    DistortionStats got;
    nvfp4_quantize_with_error(w.data(), DType::BF16, rows, cols, s2, p.data(), s.data(), got);
    const DistortionStats want =
        nvfp4_distortion(w.data(), DType::BF16, rows, cols, p.data(), s.data(), s2);
    expect_same_stats(want, got, "s2 " + std::to_string(s2));
    EXPECT_GT(got.sum_sq_ref, 0.0);
  }
  std::vector<uint8_t> p(rows * cols / 2), s(rows * cols / 16);
  DistortionStats lost;
  nvfp4_quantize_with_error(w.data(), DType::BF16, rows, cols, nvfp4_global_scale(amax * 1e9f),
                            p.data(), s.data(), lost);
  EXPECT_TRUE(lost.destroyed());
  uint64_t nonzero = 0;
  for (uint16_t v : w) nonzero += (v & 0x7FFF) != 0;
  EXPECT_EQ(lost.rounded_to_zero, nonzero) << "every non-zero value must vanish";
}

}  // namespace
}  // namespace fp4kit
