// Searched block scales (issue 15): the SIMD search (every compiled Highway target, all threads)
// against the scalar reference that tries every code, bit for bit; and the properties the search
// promises: never worse than the max-based code per block, the argmin over all 126 codes with the
// tie rule, max-based code on ties, and a checkpoint that dequantizes to exactly what was scored.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_search.hpp"
#include "fp4kit/numeric/nvfp4_search_simd.hpp"
#include "fp4kit/numeric/nvfp4_simd.hpp"
#include "fp4kit/numeric/parallel.hpp"

#include "support/same_stats.hpp"

#ifdef FP4KIT_HAVE_RAPIDCHECK
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>
#endif

namespace fp4kit {
namespace {

struct Data {
  size_t rows, cols;
  std::vector<float> v;
  std::vector<float> hess;  // [cols/16][16][16]
};

// Rows of several kinds of blocks: Gaussian, Student-t-like heavy tails, one outlier, all zero,
// tiny (E4M3 subnormal scales), a few non-zero elements, exact E2M1 grid points.
Data make_data(size_t rows, size_t cols, uint64_t seed, float s2_hint) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  Data d{rows, cols, std::vector<float>(rows * cols), {}};
  for (size_t b = 0; b < rows * cols / 16; ++b) {
    float* x = &d.v[b * 16];
    const int kind = static_cast<int>(rng() % 8);
    const float scale = s2_hint * std::ldexp(1.0f, static_cast<int>(rng() % 14) - 2);
    for (int i = 0; i < 16; ++i) {
      float g = n01(rng);
      switch (kind) {
        case 0: x[i] = scale * g; break;
        case 1: x[i] = scale * g / std::max(0.05f, std::fabs(n01(rng))); break;
        case 2: x[i] = scale * (i == 3 ? 20.0f * g : g); break;
        case 3: x[i] = (rng() & 1) ? -0.0f : 0.0f; break;
        case 4: x[i] = s2_hint * 1e-3f * g; break;
        case 5: x[i] = (rng() % 5 == 0) ? scale * g : 0.0f; break;
        case 6: x[i] = scale * e2m1_to_float(static_cast<uint8_t>(rng() % 16)); break;
        default: x[i] = scale * g * g * g; break;
      }
    }
  }
  return d;
}

// A random positive semi-definite H_j per column block: X^T X of random activations with channel
// scales spread over 2^+-4 (what makes the Hessian objective differ from MSE).
std::vector<float> make_hessian(size_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> h(cols * 16);
  for (size_t j = 0; j < cols / 16; ++j) {
    float ch[16];
    for (float& c : ch) c = std::ldexp(1.0f, static_cast<int>(rng() % 9) - 4);
    std::vector<double> acc(256, 0.0);
    for (int t = 0; t < 24; ++t) {
      float x[16];
      const float common = n01(rng);
      for (int i = 0; i < 16; ++i) x[i] = ch[i] * (n01(rng) + 0.5f * common);
      for (int i = 0; i < 16; ++i)
        for (int k = 0; k < 16; ++k) acc[i * 16 + k] += static_cast<double>(x[i]) * x[k];
    }
    if (j % 5 == 4) std::fill(acc.begin(), acc.end(), 0.0);  // a dead column block
    for (int i = 0; i < 256; ++i) h[j * 256 + i] = static_cast<float>(acc[i] / 24);
  }
  return h;
}

std::vector<uint8_t> to_dtype(const std::vector<float>& v, DType dt) {
  std::vector<uint8_t> out(v.size() * dtype_size(dt));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::BF16) {
      const uint16_t b = float_to_bf16(v[i]);
      std::memcpy(&out[i * 2], &b, 2);
    } else if (dt == DType::F16) {
      const uint16_t b = float_to_fp16(v[i]);
      std::memcpy(&out[i * 2], &b, 2);
    } else {
      std::memcpy(&out[i * 4], &v[i], 4);
    }
  }
  return out;
}

struct Enc {
  std::vector<uint8_t> packed, scales;
};

Enc run(const void* src, DType dt, size_t rows, size_t cols, float s2, const float* h, bool ref) {
  Enc e{std::vector<uint8_t>(rows * cols / 2), std::vector<uint8_t>(rows * cols / 16)};
  ScaleSearch s{h};
  if (ref)
    nvfp4_quantize_search_ref(src, dt, rows, cols, s2, s, e.packed.data(), e.scales.data());
  else
    nvfp4_quantize_search(src, dt, rows, cols, s2, s, e.packed.data(), e.scales.data());
  return e;
}

void expect_same(const Enc& a, const Enc& b, const std::string& what) {
  size_t bad = 0;
  for (size_t i = 0; i < a.scales.size(); ++i)
    if (a.scales[i] != b.scales[i] && bad++ < 5)
      ADD_FAILURE() << what << ": block " << i << " scale " << int(a.scales[i]) << " vs "
                    << int(b.scales[i]);
  EXPECT_EQ(bad, 0u) << what;
  EXPECT_TRUE(a.packed == b.packed) << what << ": packed codes differ";
}

class Search : public ::testing::TestWithParam<DType> {};

TEST_P(Search, SimdEqualsReferenceOnEveryTargetMseAndHessian) {
  const DType dt = GetParam();
  const float s2 = dt == DType::F16 ? 0x1p-8f : 0.0173f;
  const Data d = make_data(37, 96, 11, s2 * 8);  // 37 rows: a partial lane group
  const auto h = make_hessian(96, 12);
  const auto bytes = to_dtype(d.v, dt);
  for (const float* hp : {static_cast<const float*>(nullptr), h.data()}) {
    const Enc want = run(bytes.data(), dt, d.rows, d.cols, s2, hp, true);
    for (int64_t t : detail::nvfp4_simd_targets()) {
      hwy::SetSupportedTargetsForTest(t);
      expect_same(want, run(bytes.data(), dt, d.rows, d.cols, s2, hp, false),
                  std::string(hp ? "hessian " : "mse ") + hwy::TargetName(t));
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

TEST_P(Search, BytesIndependentOfThreadCount) {
  const DType dt = GetParam();
  const float s2 = 0x1p-6f;
  const Data d = make_data(300, 256, 5, s2 * 4);
  const auto bytes = to_dtype(d.v, dt);
  set_thread_count(1);
  const Enc one = run(bytes.data(), dt, d.rows, d.cols, s2, nullptr, false);
  set_thread_count(7);
  const Enc seven = run(bytes.data(), dt, d.rows, d.cols, s2, nullptr, false);
  set_thread_count(0);
  expect_same(one, seven, "1 vs 7 threads");
  expect_same(run(bytes.data(), dt, d.rows, d.cols, s2, nullptr, true), one, "reference");
}

// A plain scalar exhaustive search, written here from the definition (nvfp4_search.hpp): every
// code 1..126 scored with nvfp4_block_objective, strict improvement or a tie that is closer to the
// max-based code (then the smaller code).
uint8_t exhaustive_code(const float* w, float s2, const float* h) {
  float bamax = 0.0f;
  for (int i = 0; i < 16; ++i) bamax = std::max(bamax, std::fabs(w[i]));
  const int base = nvfp4_max_scale_code(bamax, s2);
  int best = 0;
  float best_err = 0.0f;
  for (int c = 1; c <= 126; ++c) {
    const float e = nvfp4_block_objective(w, static_cast<uint8_t>(c), s2, h);
    const bool closer = std::abs(c - base) < std::abs(best - base) ||
                        (std::abs(c - base) == std::abs(best - base) && c < best);
    if (best == 0 || e < best_err || (e == best_err && closer)) best = c, best_err = e;
  }
  return static_cast<uint8_t>(best);
}

// Blocks built to sit on the search's pruning edges: values on the E2M1 grid of a code c and of
// c +- 8 (exact ties between octaves), on the E2M1 rounding boundaries, one value per block, equal
// values, and plain Gaussian / heavy-tailed rows; the global scale spans 2^-40 .. 2^20.
TEST(SearchRandomized, SimdEqualsPlainExhaustiveSearchOnEveryTarget) {
  std::mt19937_64 rng(20261203);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  const float grid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float bounds[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  size_t moved = 0, total = 0;
  for (int round = 0; round < 24; ++round) {
    const float s2 = std::ldexp(1.0f + static_cast<float>(rng() % 1024) / 1024.0f,
                                static_cast<int>(rng() % 61) - 40);
    const size_t rows = 16 + rng() % 33, cols = 16 * (1 + rng() % 6);
    std::vector<float> w(rows * cols);
    for (size_t b = 0; b < rows * cols / 16; ++b) {
      float* x = &w[b * 16];
      const int kind = static_cast<int>(rng() % 9);
      const int code = 1 + static_cast<int>(rng() % 126);
      const float d = e4m3_to_float(static_cast<uint8_t>(code)) * s2;
      for (int i = 0; i < 16; ++i) {
        const float sg = (rng() & 1) ? -1.0f : 1.0f;
        switch (kind) {
          case 0: x[i] = sg * d * grid[rng() % 8]; break;
          case 1: x[i] = sg * d * ((rng() & 1) ? grid[rng() % 8] : 2.0f * grid[rng() % 4]); break;
          case 2: x[i] = sg * d * bounds[rng() % 7]; break;
          case 3: x[i] = sg * d * bounds[rng() % 7] * (1.0f + (static_cast<float>(rng() % 5) - 2.0f) * 0x1p-23f); break;
          case 4: x[i] = i == 0 ? sg * d * 5.0f : 0.0f; break;
          case 5: x[i] = d * 2.5f; break;
          case 6: x[i] = d * n01(rng) / std::max(0.05f, std::fabs(n01(rng))); break;
          case 7: x[i] = d * (i == 5 ? 6.0f : 0.5f * grid[rng() % 5]) * sg; break;
          default: x[i] = d * 2.0f * n01(rng); break;
        }
      }
    }
    for (DType dt : {DType::F32, DType::BF16}) {
      const auto bytes = to_dtype(w, dt);
      std::vector<float> wd(w.size());
      decode_to_f32(bytes.data(), dt, w.size(), wd.data());
      std::vector<uint8_t> want(rows * cols / 16);
      for (size_t b = 0; b < want.size(); ++b) want[b] = exhaustive_code(&wd[b * 16], s2, nullptr);
      for (int64_t t : detail::nvfp4_simd_targets()) {
        hwy::SetSupportedTargetsForTest(t);
        const Enc got = run(bytes.data(), dt, rows, cols, s2, nullptr, false);
        size_t bad = 0;
        for (size_t b = 0; b < want.size(); ++b)
          if (got.scales[b] != want[b] && bad++ < 3)
            ADD_FAILURE() << hwy::TargetName(t) << " round " << round << " s2 " << s2 << " block "
                          << b << ": " << int(got.scales[b]) << " vs exhaustive " << int(want[b]);
        ASSERT_EQ(bad, 0u);
      }
      hwy::SetSupportedTargetsForTest(0);
      for (size_t b = 0; b < want.size(); ++b) {
        float bamax = 0.0f;
        for (int i = 0; i < 16; ++i) bamax = std::max(bamax, std::fabs(wd[b * 16 + i]));
        moved += want[b] != nvfp4_max_scale_code(bamax, s2);
        ++total;
      }
    }
  }
  EXPECT_GT(moved, total / 10);  // the data must exercise the search, not only the max-based code
}

// The error statistics measured while encoding the searched codes are nvfp4_distortion's numbers
// for the written result, to the last bit, for MSE and Hessian, on every target and thread count
// (rows not a multiple of the 16-row chunks), and the bytes are those written without them.
TEST_P(Search, ErrorMeasuredWhileEncodingEqualsSecondPass) {
  const DType dt = GetParam();
  const float s2 = dt == DType::F16 ? 0x1p-8f : 0.0173f;
  const Data d = make_data(53, 96, 61, s2 * 8);
  const auto h = make_hessian(96, 62);
  const auto bytes = to_dtype(d.v, dt);
  for (const float* hp : {static_cast<const float*>(nullptr), h.data()}) {
    const Enc plain = run(bytes.data(), dt, d.rows, d.cols, s2, hp, true);
    const DistortionStats want = nvfp4_distortion(bytes.data(), dt, d.rows, d.cols,
                                                  plain.packed.data(), plain.scales.data(), s2);
    auto with_error = [&](const std::string& what) {
      Enc e{std::vector<uint8_t>(d.rows * d.cols / 2), std::vector<uint8_t>(d.rows * d.cols / 16)};
      DistortionStats got;
      nvfp4_quantize_search(bytes.data(), dt, d.rows, d.cols, s2, ScaleSearch{hp}, e.packed.data(),
                            e.scales.data(), &got);
      expect_same(plain, e, what);
      test::expect_same_stats(want, got, what);
    };
    for (int64_t t : detail::nvfp4_simd_targets()) {
      hwy::SetSupportedTargetsForTest(t);
      with_error(std::string(hp ? "hessian " : "mse ") + hwy::TargetName(t));
    }
    hwy::SetSupportedTargetsForTest(0);
    for (int threads : {1, 3}) {
      set_thread_count(threads);
      with_error(std::to_string(threads) + " threads");
    }
    set_thread_count(0);
    EXPECT_GT(want.rounded_to_zero, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Search, ::testing::Values(DType::BF16, DType::F16, DType::F32));

// The objective recomputed from the dequantized checkpoint (what a loader gets), in float64: equal
// (to float rounding) to what the search scored, and the written codes are e2m1(w / d).
TEST(SearchProperties, ChosenCodeIsTheArgminAndNeverWorseThanMax) {
  const float s2 = 0.0031f;
  const Data d = make_data(64, 128, 21, s2 * 6);
  const auto h = make_hessian(128, 22);
  size_t improved = 0, blocks = 0;
  for (const float* hp : {static_cast<const float*>(nullptr), h.data()}) {
    const Enc e = run(d.v.data(), DType::F32, d.rows, d.cols, s2, hp, false);
    const Enc m = [&] {
      Enc x{std::vector<uint8_t>(d.rows * d.cols / 2), std::vector<uint8_t>(d.rows * d.cols / 16)};
      nvfp4_quantize(d.v.data(), DType::F32, d.rows, d.cols, s2, x.packed.data(), x.scales.data());
      return x;
    }();
    for (size_t r = 0; r < d.rows; ++r)
      for (size_t j = 0; j < d.cols / 16; ++j) {
        const float* w = &d.v[r * d.cols + j * 16];
        // A dead column block (all-zero H_j) is searched with MSE.
        const float* hj =
            hp && !detail::hessian_block_is_zero(hp + j * 256) ? hp + j * 256 : nullptr;
        const uint8_t c = e.scales[r * d.cols / 16 + j], base = m.scales[r * d.cols / 16 + j];
        const float ec = nvfp4_block_objective(w, c, s2, hj);
        const float eb = nvfp4_block_objective(w, base, s2, hj);
        ASSERT_LE(ec, eb) << "row " << r << " block " << j;
        if (ec == eb) EXPECT_EQ(c, base) << "a tie must keep the max-based code";
        for (int k = 1; k <= 126; ++k)
          ASSERT_LE(ec, nvfp4_block_objective(w, static_cast<uint8_t>(k), s2, hj))
              << "row " << r << " block " << j << " code " << k;
        ++blocks;
        improved += ec < eb;
      }
  }
  // The search must actually move scales on this data (else the test shows nothing).
  EXPECT_GT(improved, blocks / 5);
}

TEST(SearchProperties, DequantizedCheckpointIsWhatWasScored) {
  const float s2 = 0.0123f;
  const Data d = make_data(40, 64, 31, s2 * 5);
  const auto h = make_hessian(64, 32);
  for (const float* hp : {static_cast<const float*>(nullptr), h.data()}) {
    const Enc e = run(d.v.data(), DType::F32, d.rows, d.cols, s2, hp, false);
    std::vector<float> deq(d.rows * d.cols);
    nvfp4_dequantize(e.packed.data(), e.scales.data(), d.rows, d.cols, s2, deq.data());
    for (size_t r = 0; r < d.rows; ++r)
      for (size_t j = 0; j < d.cols / 16; ++j) {
        const size_t o = r * d.cols + j * 16;
        float dw[16];
        for (int i = 0; i < 16; ++i) dw[i] = d.v[o + i] - deq[o + i];
        // The objective's formula on dw = w - dequantized w, in its own order.
        float err = 0.0f;
        if (!hp) {
          for (int i = 0; i < 16; ++i) err = err + dw[i] * dw[i];
        } else {
          const float* hj = hp + j * 256;
          for (int i = 0; i < 16; ++i) {
            float t = hj[i * 16 + i] * dw[i];
            for (int k = i + 1; k < 16; ++k) t = t + (2.0f * hj[i * 16 + k]) * dw[k];
            err = err + dw[i] * t;
          }
        }
        EXPECT_EQ(err, nvfp4_block_objective(&d.v[o], e.scales[r * d.cols / 16 + j], s2,
                                             hp ? hp + j * 256 : nullptr))
            << "row " << r << " block " << j;
      }
  }
}

TEST(SearchProperties, MaxScaleCodeIsTheCodecs) {
  const float s2 = 0.02f;
  const Data d = make_data(20, 64, 41, s2 * 6);
  std::vector<uint8_t> packed(d.rows * d.cols / 2), scales(d.rows * d.cols / 16);
  nvfp4_quantize(d.v.data(), DType::F32, d.rows, d.cols, s2, packed.data(), scales.data());
  for (size_t b = 0; b < scales.size(); ++b) {
    float bamax = 0;
    for (int i = 0; i < 16; ++i) bamax = std::max(bamax, std::fabs(d.v[b * 16 + i]));
    EXPECT_EQ(nvfp4_max_scale_code(bamax, s2), scales[b]) << "block " << b;
  }
}

TEST(SearchProperties, ZeroBlockKeepsScaleOneAndNaNIsAnError) {
  std::vector<float> w(32, 0.0f);
  w[20] = 1.0f;
  const Enc e = run(w.data(), DType::F32, 1, 32, 0.01f, nullptr, false);
  EXPECT_EQ(e.scales[0], 0x38);
  w[5] = std::nanf("");
  EXPECT_THROW(run(w.data(), DType::F32, 1, 32, 0.01f, nullptr, false), std::exception);
}

#ifdef FP4KIT_HAVE_RAPIDCHECK
RC_GTEST_PROP(SearchProperties, MseNeverWorseThanMaxOnRandomBlocks, ()) {
  const int e = *rc::gen::inRange(-30, 30);
  const float s2 = std::ldexp(1.0f + *rc::gen::inRange(0, 1000) / 1000.0f, e);
  std::vector<float> w(16);
  for (float& x : w)
    x = std::ldexp(static_cast<float>(*rc::gen::inRange(-4096, 4097)), e - 9 + *rc::gen::inRange(0, 6));
  std::vector<uint8_t> packed(8), sc(1), p2(8), s2c(1);
  nvfp4_quantize_search(w.data(), DType::F32, 1, 16, s2, {}, packed.data(), sc.data());
  nvfp4_quantize(w.data(), DType::F32, 1, 16, s2, p2.data(), s2c.data());
  RC_ASSERT(nvfp4_block_objective(w.data(), sc[0], s2, nullptr) <=
            nvfp4_block_objective(w.data(), s2c[0], s2, nullptr));
  std::vector<uint8_t> rp(8), rs(1);
  nvfp4_quantize_search_ref(w.data(), DType::F32, 1, 16, s2, {}, rp.data(), rs.data());
  RC_ASSERT(rs[0] == sc[0]);
  RC_ASSERT(rp == packed);
}
#endif

}  // namespace
}  // namespace fp4kit
