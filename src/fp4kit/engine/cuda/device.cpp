#include "fp4kit/engine/cuda/device.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include <cublas_v2.h>
#include <fmt/format.h>

#include "fp4kit/error.hpp"

namespace fp4kit::engine::cuda {
namespace {

// The few cuBLAS entry points the engine uses, resolved from the toolkit's shared library.
struct Cublas {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetMathMode) set_math = nullptr;
  using GemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                                   int, const void*, const void*, cudaDataType, int, const void*,
                                   cudaDataType, int, const void*, void*, cudaDataType, int,
                                   cublasComputeType_t, cublasGemmAlgo_t);
  GemmEx gemm_ex = nullptr;
  using GemmBatched = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t,
                                         int, int, int, const void*, const void*, cudaDataType,
                                         int, long long, const void*, cudaDataType, int,
                                         long long, const void*, void*, cudaDataType, int,
                                         long long, int, cublasComputeType_t, cublasGemmAlgo_t);
  GemmBatched gemm_batched = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

const Cublas& cublas() {
  static Cublas api;
  static std::string failure;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string so = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
    std::vector<std::string> tries{so};
    for (const char* env : {"CUDA_HOME", "CUDA_PATH"})
      if (const char* d = std::getenv(env)) tries.push_back(std::string(d) + "/lib64/" + so);
    tries.push_back("/usr/local/cuda/lib64/" + so);
    void* lib = nullptr;
    std::string errors;
    for (const auto& t : tries) {
      lib = dlopen(t.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib) break;
      const char* e = dlerror();
      errors += fmt::format("\n  {}: {}", t, e ? e : "not found");
    }
    if (!lib) {
      failure = fmt::format("cuBLAS {} could not be loaded (install the CUDA {} toolkit's cuBLAS "
                            "or put it on LD_LIBRARY_PATH):{}", so, CUBLAS_VER_MAJOR, errors);
      return;
    }
    auto sym = [&](const char* name) {
      void* p = dlsym(lib, name);
      if (!p && failure.empty()) failure = fmt::format("{}: symbol {} not found", so, name);
      return p;
    };
    api.create = reinterpret_cast<decltype(api.create)>(sym("cublasCreate_v2"));
    api.destroy = reinterpret_cast<decltype(api.destroy)>(sym("cublasDestroy_v2"));
    api.set_stream = reinterpret_cast<decltype(api.set_stream)>(sym("cublasSetStream_v2"));
    api.set_math = reinterpret_cast<decltype(api.set_math)>(sym("cublasSetMathMode"));
    api.gemm_ex = reinterpret_cast<decltype(api.gemm_ex)>(sym("cublasGemmEx"));
    api.gemm_batched =
        reinterpret_cast<decltype(api.gemm_batched)>(sym("cublasGemmStridedBatchedEx"));
    api.status_string = reinterpret_cast<decltype(api.status_string)>(sym("cublasGetStatusString"));
  });
  if (!failure.empty()) throw Error(failure);
  return api;
}

void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(fmt::format("cuBLAS {} failed: {}", what, cublas().status_string(st)));
}

}  // namespace

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(fmt::format("CUDA {} failed: {}", what, cudaGetErrorString(e)));
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw Error(fmt::format("CUDA kernel {} failed: {}", what, cudaGetErrorString(e)));
}

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device";
  return n;
}

DeviceInfo device_info(int index) {
  std::string why;
  const int n = device_count(&why);
  if (index < 0 || index >= n)
    throw Error(n == 0 ? fmt::format("--device cuda:{}: no CUDA device available ({})", index, why)
                       : fmt::format("--device cuda:{}: this machine has {} CUDA device(s)", index, n));
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, index), "cudaGetDeviceProperties");
  DeviceInfo d;
  d.index = index;
  d.name = p.name;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.multiprocessors = p.multiProcessorCount;
  check(cudaSetDevice(index), "cudaSetDevice");
  check(cudaMemGetInfo(&d.free_bytes, &d.total_bytes), "cudaMemGetInfo");
  return d;
}

void upload(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "upload");
  check(cudaStreamSynchronize(s), "upload");
}

void download(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "download");
  check(cudaStreamSynchronize(s), "download");
}

Context::Context(int device, Math math) : device_(device), math_(math) {
  check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking), "cudaStreamCreate");
  check(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking), "cudaStreamCreate");
  const Cublas& b = cublas();
  cublasHandle_t h = nullptr;
  check_blas(b.create(&h), "cublasCreate");
  blas_ = h;
  check_blas(b.set_stream(h, compute_), "cublasSetStream");
}

Context::~Context() {
  if (blas_) cublas().destroy(static_cast<cublasHandle_t>(blas_));
  if (compute_) cudaStreamDestroy(compute_);
  if (copy_) cudaStreamDestroy(copy_);
}

void Context::gemm_nt(const float* x, size_t rows, size_t k, const float* w, size_t n, float* y,
                      bool w_kn, bool exact) {
  if (rows == 0 || n == 0) return;
  // Row-major y = x W^T is column-major y^T = W x^T: W [n, k] row-major is W^T column-major
  // (op T, ld k); stored [k, n] it is W column-major (op N, ld n). x [rows, k] is x^T (ld k).
  const float one = 1.0f, zero = 0.0f;
  const cublasComputeType_t ct =
      (math_ == Math::Tf32 && !exact) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  check_blas(cublas().gemm_ex(static_cast<cublasHandle_t>(blas_), w_kn ? CUBLAS_OP_N : CUBLAS_OP_T,
                              CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(rows),
                              static_cast<int>(k), &one, w, CUDA_R_32F,
                              static_cast<int>(w_kn ? n : k), x, CUDA_R_32F, static_cast<int>(k),
                              &zero, y, CUDA_R_32F, static_cast<int>(n), ct, CUBLAS_GEMM_DEFAULT),
             "gemm");
}

void Context::gemm_batched(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                           const float* A, int lda, long long sa, const float* B, int ldb,
                           long long sb, float* C, int ldc, long long sc, int batch, bool exact) {
  if (m == 0 || n == 0 || batch == 0) return;
  const float zero = 0.0f;
  const cublasComputeType_t ct =
      (math_ == Math::Tf32 && !exact) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  check_blas(cublas().gemm_batched(static_cast<cublasHandle_t>(blas_),
                                   trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A,
                                   CUDA_R_32F, lda, sa, B, CUDA_R_32F, ldb, sb, &zero, C,
                                   CUDA_R_32F, ldc, sc, batch, ct, CUBLAS_GEMM_DEFAULT),
             "batched gemm");
}

void Context::sync() { check(cudaStreamSynchronize(compute_), "synchronize"); }

}  // namespace fp4kit::engine::cuda
