// oneTBB behind parallel_for: the only file that includes TBB.
#include "fp4kit/numeric/parallel.hpp"

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>

namespace fp4kit {

namespace {
std::mutex g_mutex;
// A global_control only limits threads while it is alive, so it lives here until replaced.
std::unique_ptr<tbb::global_control> g_limit;
int g_threads = 0;  // 0 = default (all cores)
thread_local bool t_in_task = false;  // inside parallel_tasks: parallel_for runs inline

// Sets t_in_task for its lifetime (restored on exit, exceptions included).
struct InTask {
  bool outer = t_in_task;
  InTask() { t_in_task = true; }
  ~InTask() { t_in_task = outer; }
};
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
  if (end - begin <= grain || t_in_task) {
    body(begin, end);  // not worth waking the pool, or one task of parallel_tasks
    return;
  }
  tbb::parallel_for(tbb::blocked_range<size_t>(begin, end, grain),
                    [&](const tbb::blocked_range<size_t>& r) { body(r.begin(), r.end()); });
}

bool in_parallel_task() { return t_in_task; }

void parallel_tasks(size_t n, const std::function<void(size_t)>& task) {
  if (n == 0) return;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  auto worker = [&] {
    const InTask in;
    try {
      for (size_t i = next.fetch_add(1); i < n && !failed.load(); i = next.fetch_add(1)) task(i);
    } catch (...) {
      failed.store(true);
      throw;
    }
  };
  const size_t workers = std::min(n, static_cast<size_t>(std::max(1, thread_count())));
  if (workers <= 1 || t_in_task) {
    worker();
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<size_t>(0, workers, 1),
      [&](const tbb::blocked_range<size_t>& r) {
        for (size_t w = r.begin(); w < r.end(); ++w) worker();
      },
      tbb::simple_partitioner());
}

}  // namespace fp4kit
