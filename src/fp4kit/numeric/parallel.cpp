// oneTBB behind parallel_for: the only file that includes TBB.
#include "fp4kit/numeric/parallel.hpp"

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>

#include <memory>
#include <mutex>

namespace fp4kit {

namespace {
std::mutex g_mutex;
// A global_control only limits threads while it is alive, so it lives here until replaced.
std::unique_ptr<tbb::global_control> g_limit;
int g_threads = 0;  // 0 = default (all cores)
}  // namespace

void set_thread_count(int n) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_limit.reset();
  g_threads = n > 0 ? n : 0;
  if (g_threads > 0)
    g_limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                    static_cast<size_t>(g_threads));
}

int thread_count() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_threads > 0) return g_threads;
  return static_cast<int>(tbb::info::default_concurrency());
}

void parallel_for(size_t begin, size_t end, size_t grain,
                  const std::function<void(size_t, size_t)>& body) {
  if (begin >= end) return;
  if (grain == 0) grain = 1;
  if (end - begin <= grain) {
    body(begin, end);  // not worth waking the pool
    return;
  }
  tbb::parallel_for(tbb::blocked_range<size_t>(begin, end, grain),
                    [&](const tbb::blocked_range<size_t>& r) { body(r.begin(), r.end()); });
}

}  // namespace fp4kit
