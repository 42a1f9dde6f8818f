// decode_to_f32 for every float dtype, the distortion statistics (hand-computed), and parallel_for.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {
namespace {

TEST(DecodeToF32, EveryFloatDtype) {
  float out[3];
  const uint16_t bf16[3] = {0x3F80, 0xC040, 0x0000};  // 1, -3, 0
  decode_to_f32(bf16, DType::BF16, 3, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  const uint16_t f16[3] = {0x3C00, 0xC200, 0x0001};  // 1, -3, 2^-24
  decode_to_f32(f16, DType::F16, 3, out);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -24));
  const double f64[3] = {0.1, -2.5, 1e300};
  decode_to_f32(f64, DType::F64, 3, out);
  EXPECT_EQ(out[0], 0.1f);
  EXPECT_EQ(out[1], -2.5f);
  EXPECT_TRUE(std::isinf(out[2]));
  const float f32[3] = {1.5f, -0.0f, 7.0f};
  decode_to_f32(f32, DType::F32, 3, out);
  EXPECT_EQ(std::memcmp(out, f32, sizeof f32), 0);
  const uint8_t e4m3[3] = {0x7E, 0xB8, 0x01};  // 448, -1, 2^-9
  decode_to_f32(e4m3, DType::F8_E4M3, 3, out);
  EXPECT_EQ(out[0], 448.0f);
  EXPECT_EQ(out[1], -1.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -9));
  const uint8_t e5m2[3] = {0x3C, 0xC2, 0x7B};  // 1, -3, 57344
  decode_to_f32(e5m2, DType::F8_E5M2, 3, out);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(out[2], 57344.0f);
  const uint8_t e8m0[3] = {127, 130, 100};  // 1, 8, 2^-27
  decode_to_f32(e8m0, DType::F8_E8M0, 3, out);
  EXPECT_EQ(out[1], 8.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -27));
  const int32_t ints[1] = {1};
  EXPECT_THROW(decode_to_f32(ints, DType::I32, 1, out), Error);
}

TEST(Distortion, HandComputedStats) {
  DistortionStats s;
  s.add(1.0f, 0.5f);    // err 0.5
  s.add(-2.0f, -2.0f);  // exact
  s.add(0.5f, 0.0f);    // rounded to zero, err 0.5
  s.add(0.25f, -0.25f); // sign flip, err 0.5
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.sum_sq_ref, 1 + 4 + 0.25 + 0.0625);
  EXPECT_DOUBLE_EQ(s.sum_sq_err, 0.25 + 0 + 0.25 + 0.25);
  EXPECT_DOUBLE_EQ(s.max_abs_err, 0.5);
  EXPECT_EQ(s.rounded_to_zero, 1u);
  EXPECT_EQ(s.sign_flips, 1u);
  EXPECT_DOUBLE_EQ(s.rel_rmse(), std::sqrt(0.75 / 5.3125));
  EXPECT_DOUBLE_EQ(s.sqnr_db(), 10 * std::log10(5.3125 / 0.75));
  DistortionStats t;
  t.add(3.0f, 1.0f);
  s.merge(t);
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.max_abs_err, 2.0);
  EXPECT_TRUE(std::isinf(DistortionStats{}.sqnr_db()));
  EXPECT_EQ(DistortionStats{}.rel_rmse(), 0.0);
}

TEST(Distortion, Nvfp4ExactGridIsLosslessAndErrorsAreCounted) {
  // s2 = 2^-4 and a block max of 6 * s2 * 1 -> scale 1.0 (0x38), d = s2: values k * 0.5 * s2
  // for grid points are exact; the last row has 0.3 * s2 -> 0.5 * s2 (err 0.2 s2, by hand).
  const size_t rows = 3, cols = 16;
  const float s2 = 0.0625f;
  const float grid[16] = {6, 0, 0.5, 1, 1.5, 2, 3, 4, -6, -0.5, -1, -1.5, -2, -3, -4, 0};
  std::vector<float> w(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) w[r * cols + c] = grid[c] * s2;
  w[2 * cols + 1] = 0.3f * s2;
  std::vector<uint8_t> packed(rows * cols / 2), scales(rows);
  nvfp4_quantize(w.data(), DType::F32, rows, cols, s2, packed.data(), scales.data());
  for (uint8_t sc : scales) EXPECT_EQ(sc, 0x38);
  const DistortionStats st =
      nvfp4_distortion(w.data(), DType::F32, rows, cols, packed.data(), scales.data(), s2);
  EXPECT_EQ(st.count, rows * cols);
  EXPECT_NEAR(st.sum_sq_err, std::pow(0.2 * s2, 2), 1e-9);  // 0.3f is not exact
  EXPECT_NEAR(st.max_abs_err, 0.2 * s2, 1e-9);
  EXPECT_EQ(st.sign_flips, 0u);
  EXPECT_EQ(st.rounded_to_zero, 0u);
}

TEST(Parallel, CoversTheRangeOnceAndHonoursThreadCount) {
  for (int threads : {1, 2, 0}) {
    set_thread_count(threads);
    if (threads > 0) EXPECT_EQ(thread_count(), threads);
    std::vector<std::atomic<int>> hits(100'003);
    parallel_for(3, hits.size(), 7, [&](size_t b, size_t e) {
      EXPECT_LE(b, e);
      for (size_t i = b; i < e; ++i) ++hits[i];
    });
    for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i].load(), i < 3 ? 0 : 1) << i;
  }
  set_thread_count(0);
  EXPECT_GE(thread_count(), 1);
  parallel_for(5, 5, 1, [](size_t, size_t) { FAIL() << "empty range must not call the body"; });
}

TEST(Parallel, TasksRunOnceEachAndTheirParallelForRunsInline) {
  for (int threads : {1, 3, 0}) {
    set_thread_count(threads);
    constexpr size_t n = 200;
    std::vector<std::atomic<int>> hits(n);
    std::atomic<int> not_inline{0}, outside{0};
    EXPECT_FALSE(in_parallel_task());
    parallel_tasks(n, [&](size_t i) {
      ++hits[i];
      if (!in_parallel_task()) ++outside;
      const auto me = std::this_thread::get_id();
      // A task's parallel_for stays on the task's thread, in one call over the whole range.
      int calls = 0;
      parallel_for(0, 100'000, 1, [&](size_t b, size_t e) {
        ++calls;
        if (std::this_thread::get_id() != me || b != 0 || e != 100'000) ++not_inline;
      });
      if (calls != 1) ++not_inline;
    });
    EXPECT_FALSE(in_parallel_task());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
    EXPECT_EQ(not_inline.load(), 0);
    EXPECT_EQ(outside.load(), 0);
  }
  set_thread_count(0);
}

TEST(Parallel, ATaskExceptionReachesTheCallerAndStopsNewTasks) {
  set_thread_count(2);
  std::atomic<int> started{0};
  EXPECT_THROW(parallel_tasks(10'000,
                              [&](size_t i) {
                                ++started;
                                if (i == 3) throw Error("task 3 failed");
                                // Slow enough that the other worker cannot run the remaining
                                // 9996 tasks while task 3's exception unwinds (slow under qemu).
                                std::this_thread::sleep_for(std::chrono::microseconds(200));
                              }),
               Error);
  EXPECT_LT(started.load(), 10'000);
  EXPECT_FALSE(in_parallel_task());
  set_thread_count(0);
}

}  // namespace
}  // namespace fp4kit
