#pragma once
// Cross-layer weight prefetch of the GPU backend: while one layer computes, a host thread copies
// the next layer's stored bytes from the memory-mapped checkpoint into pinned buffers (all cores)
// and a copy stream uploads them into one device allocation per layer (double buffering: the
// layer in use and the one arriving). A load then finds its tensor on the device: the compute
// stream waits for that tensor's arrival event (not for the whole layer) and widens it there.
// Only tensors of rank >= 2 of BF16/F16/F32/U8/F8_E4M3 are moved (what the backend widens or
// decodes on the device: float weights, FP8 / NVFP4 / MXFP4 codes and scales); the values are the
// stored bytes either way, so the numbers never depend on the prefetch.
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine::cuda {

// dst[0, len) = src[0, len) on all cores in pieces of 256 KiB (mmap'd checkpoint bytes into a
// pinned staging buffer).
void parallel_copy(uint8_t* dst, const uint8_t* src, size_t len);

class Prefetcher {
 public:
  Prefetcher(int device, cudaStream_t compute, cudaStream_t copy);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Starts moving `tensors` of `ckpt` (those it can; the rest are ignored). Keeps the previous
  // request (the layer now loading) and frees the older ones, in stream order on `compute`.
  // Skipped when the bytes exceed a quarter of the device's free memory.
  void request(const Checkpoint& ckpt, const std::vector<std::string>& tensors);
  // The device copy of the stored bytes of `name`, with `compute` made to wait for them; null
  // when it was not requested. Blocks the host until the copy is enqueued. Rethrows an error of
  // the copying thread.
  const uint8_t* acquire(const Checkpoint& ckpt, const std::string& name);
  // Bytes of device memory the prefetch may hold at once: two layers' stored tensors.
  static size_t budget(size_t layer_bytes) { return 2 * layer_bytes; }

 private:
  struct Tensor {
    std::string name;
    const uint8_t* src = nullptr;
    size_t bytes = 0, offset = 0;  // offset into the request's device allocation
    cudaEvent_t arrived = nullptr;
    bool ready = false;  // `arrived` recorded on the copy stream
  };
  struct Request {
    const Checkpoint* ckpt = nullptr;
    std::vector<Tensor> tensors;
    std::map<std::string, size_t, std::less<>> index;
    uint8_t* dev = nullptr;
    cudaEvent_t allocated = nullptr;  // on compute: the allocation exists
    cudaEvent_t done = nullptr;       // on copy: every tensor arrived
    bool started = false, finished = false;  // by the worker
  };
  void worker();
  void copy_request(Request& r);
  void drop(std::unique_ptr<Request>& r);

  int device_;
  cudaStream_t compute_, copy_;
  static constexpr int kRing = 4;
  static constexpr size_t kChunk = size_t(32) << 20;
  void* pinned_[kRing] = {};
  cudaEvent_t pinned_free_[kRing] = {};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Request>> live_;  // oldest first; the worker copies in this order
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace fp4kit::engine::cuda
