#pragma once
// The CUDA device of the engine's GPU backend: discovery that is graceful without a driver (the
// CUDA runtime is linked statically and loads the driver only when asked), device buffers, and a
// context per run: a compute and a copy stream and cuBLAS, which is loaded with dlopen on first
// use, so the fp4kit binary starts, and runs on the CPU, where neither driver nor cuBLAS exists.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

namespace fp4kit::engine::cuda {

// Throws fp4kit::Error "CUDA <what>: <error string>" unless e == cudaSuccess.
void check(cudaError_t e, const char* what);
// After a kernel launch: throws fp4kit::Error "CUDA kernel <what> failed: <error string>" if the
// launch (or an earlier asynchronous error) failed.
void check_launch(const char* what);

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
  size_t total_bytes = 0, free_bytes = 0;
};

// Number of usable CUDA devices. 0 when there is none, with the reason in *why (no driver, no
// device, driver too old for this runtime).
int device_count(std::string* why);
// Throws for an index out of range or a device that cannot be opened.
DeviceInfo device_info(int index);

// cudaMalloc'd array of T; grows on demand (contents are not kept when it grows).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) { reserve(n); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~DeviceArray() { if (p_) cudaFree(p_); }
  void reserve(size_t n) {
    if (n <= n_) return;
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
    void* p = nullptr;
    check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
    p_ = static_cast<T*>(p);
    n_ = n;
  }
  T* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Copies on `s` and waits for them.
void upload(void* dst, const void* src, size_t bytes, cudaStream_t s);
void download(void* dst, const void* src, size_t bytes, cudaStream_t s);
template <typename T>
void upload(DeviceArray<T>& dst, const std::vector<T>& src, cudaStream_t s) {
  dst.reserve(src.size());
  upload(dst.data(), src.data(), src.size() * sizeof(T), s);
}

enum class Math {
  Tf32,  // float32 data, TF32 tensor-core products with float32 accumulation (default)
  Fp32,  // plain float32 products
};

class Context {
 public:
  Context(int device, Math math);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t compute() const { return compute_; }
  cudaStream_t copy() const { return copy_; }
  Math math() const { return math_; }

  // y[rows, n] = x[rows, k] * W^T on the compute stream. W is [n, k] row-major as checkpoints
  // store linears, or [k, n] when w_kn (gpt-oss BMM experts). exact: plain float32 even in Tf32
  // mode (routers).
  void gemm_nt(const float* x, size_t rows, size_t k, const float* w, size_t n, float* y,
               bool w_kn = false, bool exact = false);
  // cuBLAS's column-major C_b = alpha op(A_b) op(B_b) for b < batch, A_b = A + b * sa (likewise
  // B, C; a stride of 0 shares one matrix), on the compute stream, in the context's math
  // (exact: plain float32 always).
  void gemm_batched(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* A,
                    int lda, long long sa, const float* B, int ldb, long long sb, float* C, int ldc,
                    long long sc, int batch, bool exact = false);
  void sync();

 private:
  int device_ = 0;
  Math math_ = Math::Tf32;
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  void* blas_ = nullptr;  // cublasHandle_t
};

}  // namespace fp4kit::engine::cuda
