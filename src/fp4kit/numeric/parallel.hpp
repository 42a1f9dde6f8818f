#pragma once
// The one place that knows about the thread pool (oneTBB). Everything else calls parallel_for.
#include <cstddef>
#include <functional>

namespace fp4kit {

// Limits the worker threads for the rest of the process (0 = all cores).
void set_thread_count(int n);
int thread_count();

// Calls body(begin, end) on disjoint sub-ranges of [begin, end) of at least `grain` items, on all
// threads. Work splitting never changes results: callers write disjoint outputs.
void parallel_for(size_t begin, size_t end, size_t grain,
                  const std::function<void(size_t, size_t)>& body);

}  // namespace fp4kit
