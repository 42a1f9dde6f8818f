#include "fp4kit/engine/cuda/prefetch.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

#include <cuda_runtime.h>

#include "fp4kit/engine/cuda/device.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine::cuda {
namespace {

// The order a layer's blocks load their tensors in, roughly: the mixer (attention) first, then
// the MLP's router and dense linears, routed experts by index, shared experts last; names with
// numbers compared by value (experts.2 before experts.10). Only speed depends on it.
int stage_of(const std::string& n) {
  if (n.find("shared_expert") != std::string::npos) return 3;
  if (n.find(".experts.") != std::string::npos) return 2;
  if (n.find(".mlp.") != std::string::npos || n.find(".feed_forward.") != std::string::npos ||
      n.find(".block_sparse_moe.") != std::string::npos)
    return 1;
  return 0;
}

bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i1 = i, j1 = j;
      while (i1 < a.size() && std::isdigit(static_cast<unsigned char>(a[i1]))) ++i1;
      while (j1 < b.size() && std::isdigit(static_cast<unsigned char>(b[j1]))) ++j1;
      if (i1 - i != j1 - j) return i1 - i < j1 - j;
      const int c = a.compare(i, i1 - i, b, j, j1 - j);
      if (c != 0) return c < 0;
      i = i1, j = j1;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i, ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

// What the backend decodes on the device: float weights, and the codes and scales of FP8,
// NVFP4 and MXFP4 weights (U8 / F8_E4M3; their scale grids are F32 / BF16).
bool movable(const TensorInfo& t) {
  return (t.dtype == DType::BF16 || t.dtype == DType::F16 || t.dtype == DType::F32 ||
          t.dtype == DType::U8 || t.dtype == DType::F8_E4M3) &&
         t.shape.size() >= 2 && t.nbytes() > 0;
}

}  // namespace

void parallel_copy(uint8_t* dst, const uint8_t* src, size_t len) {
  constexpr size_t kPiece = size_t(256) << 10;
  parallel_for(0, (len + kPiece - 1) / kPiece, 1, [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b)
      std::memcpy(dst + b * kPiece, src + b * kPiece, std::min(kPiece, len - b * kPiece));
  });
}

Prefetcher::Prefetcher(int device, cudaStream_t compute, cudaStream_t copy)
    : device_(device), compute_(compute), copy_(copy), thread_([this] { worker(); }) {}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  cudaStreamSynchronize(copy_);
  cudaStreamSynchronize(compute_);
  while (!live_.empty()) {
    Request& r = *live_.front();
    for (Tensor& t : r.tensors)
      if (t.arrived) cudaEventDestroy(t.arrived);
    if (r.allocated) cudaEventDestroy(r.allocated);
    if (r.done) cudaEventDestroy(r.done);
    if (r.dev) cudaFreeAsync(r.dev, compute_);
    live_.pop_front();
  }
  cudaStreamSynchronize(compute_);
  for (int i = 0; i < kRing; ++i) {
    if (pinned_free_[i]) cudaEventDestroy(pinned_free_[i]);
    if (pinned_[i]) cudaFreeHost(pinned_[i]);
  }
}

void Prefetcher::request(const Checkpoint& ckpt, const std::vector<std::string>& names) {
  auto r = std::make_unique<Request>();
  r->ckpt = &ckpt;
  size_t total = 0;
  for (const std::string& n : names) {
    if (!ckpt.has(n)) continue;
    const TensorInfo& t = ckpt.info(n);
    if (!movable(t)) continue;
    Tensor x;
    x.name = n;
    x.bytes = t.nbytes();
    total += (x.bytes + 255) / 256 * 256;
    r->tensors.push_back(std::move(x));
  }
  std::stable_sort(r->tensors.begin(), r->tensors.end(), [](const Tensor& a, const Tensor& b) {
    const int sa = stage_of(a.name), sb = stage_of(b.name);
    return sa != sb ? sa < sb : natural_less(a.name, b.name);
  });
  {
    // Free the requests before the previous one (their blocks are built and enqueued).
    std::unique_lock<std::mutex> lk(mu_);
    while (live_.size() >= 2) {
      cv_.wait(lk, [&] { return live_.front()->finished || error_; });
      if (error_) std::rethrow_exception(error_);
      drop(live_.front());
      live_.pop_front();
    }
  }
  if (r->tensors.empty()) return;
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  if (total > free_b / 4) return;  // too big to hold two: loads stage as they come
  size_t offset = 0;
  for (Tensor& t : r->tensors) {  // offsets in copy order (the sort moved them)
    t.offset = offset;
    offset += (t.bytes + 255) / 256 * 256;
    t.src = ckpt.bytes(t.name).data();
    r->index[t.name] = static_cast<size_t>(&t - r->tensors.data());
  }
  void* p = nullptr;
  check(cudaMallocAsync(&p, offset, compute_), "cudaMallocAsync (prefetch)");
  r->dev = static_cast<uint8_t*>(p);
  check(cudaEventCreateWithFlags(&r->allocated, cudaEventDisableTiming), "event");
  check(cudaEventCreateWithFlags(&r->done, cudaEventDisableTiming), "event");
  check(cudaEventRecord(r->allocated, compute_), "event");
  {
    std::lock_guard<std::mutex> lk(mu_);
    live_.push_back(std::move(r));
  }
  cv_.notify_all();
}

const uint8_t* Prefetcher::acquire(const Checkpoint& ckpt, const std::string& name) {
  std::unique_lock<std::mutex> lk(mu_);
  for (auto& rp : live_) {
    Request& r = *rp;
    if (r.ckpt != &ckpt) continue;
    const auto it = r.index.find(name);
    if (it == r.index.end()) continue;
    Tensor& t = r.tensors[it->second];
    cv_.wait(lk, [&] { return t.ready || error_; });
    if (error_) std::rethrow_exception(error_);
    check(cudaStreamWaitEvent(compute_, t.arrived, 0), "cudaStreamWaitEvent");
    return r.dev + t.offset;
  }
  return nullptr;
}

void Prefetcher::drop(std::unique_ptr<Request>& r) {
  // Compute waits for every copy (tensors never acquired included) before the memory goes back.
  check(cudaStreamWaitEvent(compute_, r->done, 0), "cudaStreamWaitEvent");
  check(cudaFreeAsync(r->dev, compute_), "cudaFreeAsync (prefetch)");
  for (Tensor& t : r->tensors)
    if (t.arrived) cudaEventDestroy(t.arrived);
  cudaEventDestroy(r->allocated);
  cudaEventDestroy(r->done);
}

void Prefetcher::worker() {
  try {
    check(cudaSetDevice(device_), "cudaSetDevice (prefetch thread)");
    for (;;) {
      Request* r = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] {
          if (stop_) return true;
          for (auto& q : live_)
            if (!q->started) return true;
          return false;
        });
        if (stop_) return;
        for (auto& q : live_)
          if (!q->started) {
            r = q.get();
            break;
          }
        r->started = true;
      }
      copy_request(*r);
      {
        std::lock_guard<std::mutex> lk(mu_);
        r->finished = true;
      }
      cv_.notify_all();
    }
  } catch (...) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      error_ = std::current_exception();
    }
    cv_.notify_all();
  }
}

void Prefetcher::copy_request(Request& r) {
  if (!pinned_[0]) {
    for (int i = 0; i < kRing; ++i) {
      check(cudaHostAlloc(&pinned_[i], kChunk, cudaHostAllocDefault), "cudaHostAlloc (prefetch)");
      check(cudaEventCreateWithFlags(&pinned_free_[i], cudaEventDisableTiming), "event");
    }
  }
  check(cudaStreamWaitEvent(copy_, r.allocated, 0), "cudaStreamWaitEvent");
  int slot = 0;
  for (Tensor& t : r.tensors) {
    for (size_t off = 0; off < t.bytes; off += kChunk) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) return;
      }
      const size_t len = std::min(kChunk, t.bytes - off);
      check(cudaEventSynchronize(pinned_free_[slot]), "prefetch staging");
      uint8_t* buf = static_cast<uint8_t*>(pinned_[slot]);
      parallel_copy(buf, t.src + off, len);
      check(cudaMemcpyAsync(r.dev + t.offset + off, buf, len, cudaMemcpyHostToDevice, copy_),
            "prefetch upload");
      check(cudaEventRecord(pinned_free_[slot], copy_), "event");
      slot = (slot + 1) % kRing;
    }
    cudaEvent_t ev = nullptr;
    check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "event");
    check(cudaEventRecord(ev, copy_), "event");
    {
      std::lock_guard<std::mutex> lk(mu_);
      t.arrived = ev;
      t.ready = true;
    }
    cv_.notify_all();
  }
  check(cudaEventRecord(r.done, copy_), "event");
}

}  // namespace fp4kit::engine::cuda
