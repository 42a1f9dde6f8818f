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

// Runs task(i) for every i in [0, n), each task on ONE thread, all threads taking the next task
// in index order (callers put the longest first: no waves, no barrier between tasks). Inside a
// task parallel_for runs its body inline and in_parallel_task() is true, so a task computes the
// same bytes whatever the thread count. The first exception thrown by a task stops the others
// from starting new tasks and is rethrown.
void parallel_tasks(size_t n, const std::function<void(size_t)>& task);
bool in_parallel_task();

}  // namespace fp4kit
