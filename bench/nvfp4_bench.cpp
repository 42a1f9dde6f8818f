// bf16 -> NVFP4 throughput (GB/s of bf16 input) on one thread and on all threads, beside a
// memory-read baseline over the same buffer measured in the same binary.
//   build-numeric/bench/bench_nvfp4 --benchmark_counters_tabular=true
// Counters: GBps = bf16 input bytes per second / 1e9 (mean), GBps_best = the best iteration;
// vs_read_1t / vs_read_all = GBps_best divided by the read baseline (one thread / all threads,
// best of 30 passes) measured once at start-up. Targets: 1 thread >= 2 GB/s, all threads
// vs_read_all >= 0.5.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_simd.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace {

using namespace fp4kit;

// 16384 x 4096 bf16 = 128 MiB: 4x the last-level cache (32 MiB here), like a real weight matrix.
constexpr size_t kRows = 16384, kCols = 4096;

struct Data {
  std::vector<uint16_t> w;
  std::vector<uint8_t> packed, scales;
  float s2;
  Data() : w(kRows * kCols), packed(kRows * kCols / 2), scales(kRows * kCols / 16) {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    for (auto& v : w) v = float_to_bf16(nd(rng));
    s2 = nvfp4_global_scale(tensor_amax(w.data(), DType::BF16, kRows, kCols));
  }
};
Data& data() {
  static Data d;
  return d;
}

uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  for (; i < n; ++i) a += p[i];
  return a + b + c + d;
}

// Read bandwidth in GB/s over the bf16 buffer: best of 30 passes (the quantize counters also take
// the best iteration, so the ratio compares like with like on a noisy machine).
double read_gbps(int threads) {
  set_thread_count(threads);
  const auto* p = reinterpret_cast<const uint64_t*>(data().w.data());
  const size_t n = data().w.size() / 4;
  double best = 0;
  for (int rep = 0; rep < 30; ++rep) {
    std::atomic<uint64_t> total{0};
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(0, n, 1 << 16, [&](size_t b, size_t e) { total += sum_words(p + b, e - b); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(total.load());
    best = std::max(best, n * 8 / s / 1e9);
  }
  set_thread_count(0);
  return best;
}
double read_1t() {
  static double v = read_gbps(1);
  return v;
}
double read_all() {
  static double v = read_gbps(0);
  return v;
}

void BM_ReadBaseline(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  set_thread_count(threads);
  const auto* p = reinterpret_cast<const uint64_t*>(data().w.data());
  const size_t n = data().w.size() / 4;
  for (auto _ : state) {
    std::atomic<uint64_t> total{0};
    parallel_for(0, n, 1 << 16, [&](size_t b, size_t e) { total += sum_words(p + b, e - b); });
    benchmark::DoNotOptimize(total.load());
  }
  set_thread_count(0);
  state.counters["GBps"] = benchmark::Counter(static_cast<double>(state.iterations() * n * 8) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// The ratios are computed from our own wall-clock timing of the loop (not kIsRate counters), so
// they print as plain numbers: vs_read_all >= 0.5 is the all-threads target.
void BM_Nvfp4QuantizeBf16(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  Data& d = data();
  const double r1 = read_1t(), ra = read_all();
  set_thread_count(threads);
  state.SetLabel(detail::nvfp4_simd_target() + (threads ? " 1 thread" : " all threads"));
  double seconds = 0, best = 1e30;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    nvfp4_quantize(d.w.data(), DType::BF16, kRows, kCols, d.s2, d.packed.data(), d.scales.data());
    benchmark::ClobberMemory();
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds += t;
    best = std::min(best, t);
  }
  set_thread_count(0);
  const double gb = static_cast<double>(d.w.size() * 2) / 1e9;
  // Mean over iterations, and the best iteration (the read baseline is a best-of too, so the
  // ratios compare like with like on a shared, noisy machine).
  state.counters["GBps"] = gb * static_cast<double>(state.iterations()) / seconds;
  state.counters["GBps_best"] = gb / best;
  state.counters["read_1t_GBps"] = r1;
  state.counters["read_all_GBps"] = ra;
  state.counters["vs_read_1t"] = gb / best / r1;
  state.counters["vs_read_all"] = gb / best / ra;
}

void BM_Nvfp4QuantizeRefBf16(benchmark::State& state) {
  // The scalar reference, one thread, on 512 rows (it is slow): for comparison only.
  Data& d = data();
  const size_t rows = 512;
  for (auto _ : state) {
    nvfp4_quantize_ref(d.w.data(), DType::BF16, rows, kCols, d.s2, d.packed.data(), d.scales.data());
    benchmark::ClobberMemory();
  }
  const double gb = static_cast<double>(state.iterations() * rows * kCols * 2) / 1e9;
  state.counters["GBps"] = benchmark::Counter(gb, benchmark::Counter::kIsRate);
}

void BM_TensorAmaxBf16(benchmark::State& state) {
  // The pass before quantizing (s2 needs the tensor amax), all threads.
  Data& d = data();
  float amax = 0;
  for (auto _ : state) benchmark::DoNotOptimize(amax = tensor_amax(d.w.data(), DType::BF16, kRows, kCols));
  const double gb = static_cast<double>(state.iterations() * d.w.size() * 2) / 1e9;
  state.counters["GBps"] = benchmark::Counter(gb, benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_TensorAmaxBf16)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ReadBaseline)->Arg(1)->Arg(0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Nvfp4QuantizeBf16)->Arg(1)->Arg(0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Nvfp4QuantizeRefBf16)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
