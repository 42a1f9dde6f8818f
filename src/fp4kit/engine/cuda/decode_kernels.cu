// Weight decoding kernels of the GPU backend (see decode_kernels.hpp). Products are written with
// __fmul_rn / __fdiv_rn: one IEEE rounding each, never contracted, as the host computes them.
#include "fp4kit/engine/cuda/decode_kernels.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "fp4kit/engine/cuda/device.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine::cuda {
namespace {

unsigned blocks_for(size_t n, unsigned threads) {
  const size_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 1048576 ? 1048576 : b));
}

__constant__ float kE2m1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// numeric/formats.cpp e4m3_to_float: the exact value (NaN for 0x7F / 0xFF).
__device__ __forceinline__ float e4m3(uint8_t code) {
  const uint32_t sign = uint32_t(code & 0x80u) << 24;
  const uint32_t exp = (code >> 3) & 0xFu, man = code & 7u;
  if (exp == 0xF && man == 7) return __uint_as_float(0x7FC00000u | sign);
  if (exp == 0) {
    const float mag = static_cast<float>(man) * 0.001953125f;  // man * 2^-9, exact
    return sign ? -mag : mag;
  }
  return __uint_as_float(sign | ((exp + 120) << 23) | (man << 20));
}

__global__ void fp8_block_kernel(const uint8_t* codes, size_t n, size_t k, const void* grid,
                                 bool bf16, size_t gc, size_t br, size_t bc, float* out,
                                 unsigned long long* first_bad) {
  const size_t total = n * k;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < total;
       e += size_t(gridDim.x) * blockDim.x) {
    const size_t r = e / k, c = e % k;
    const uint8_t code = codes[e];
    if ((code & 0x7F) == 0x7F) atomicMin(first_bad, static_cast<unsigned long long>(e));
    const size_t gi = (r / br) * gc + c / bc;
    const float sc = bf16 ? __uint_as_float(uint32_t(static_cast<const uint16_t*>(grid)[gi]) << 16)
                          : static_cast<const float*>(grid)[gi];
    out[e] = __fmul_rn(e4m3(code), sc);
  }
}

__global__ void nvfp4_kernel(const uint8_t* codes, size_t code_rs, size_t code_cs,
                             const uint8_t* scales, size_t sc_rs, size_t sc_cs, size_t n, size_t k,
                             float s2, bool divide, float* out) {
  const size_t total = n * k;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < total;
       e += size_t(gridDim.x) * blockDim.x) {
    const size_t r = e / k, c = e % k;
    const uint8_t byte = codes[r * code_rs + (c / 2) * code_cs];
    const float v = kE2m1[(c & 1) ? (byte >> 4) : (byte & 0xF)];
    const float sf = e4m3(scales[r * sc_rs + (c / 16) * sc_cs]);
    out[e] = divide ? __fmul_rn(v, __fdiv_rn(sf, s2)) : __fmul_rn(__fmul_rn(v, sf), s2);
  }
}

__global__ void mxfp4_kernel(const uint8_t* blocks, const uint8_t* scales, size_t groups,
                             float* out, unsigned long long* first_bad) {
  const size_t total = groups * 32;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < total;
       e += size_t(gridDim.x) * blockDim.x) {
    const size_t g = e / 32, i = e % 32;
    const uint8_t s = scales[g];
    if (s == 0xFF && i == 0) atomicMin(first_bad, static_cast<unsigned long long>(g));
    // 2^(s - 127) exactly; s = 0 is the subnormal 2^-127.
    const float sc = s == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(uint32_t(s) << 23);
    const uint8_t byte = blocks[g * 16 + i / 2];
    out[e] = __fmul_rn(kE2m1[(i & 1) ? (byte >> 4) : (byte & 0xF)], sc);
  }
}

template <typename T>
__global__ void transpose_kernel(const T* src, size_t k, size_t n, float* out) {
  const size_t total = n * k;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < total;
       e += size_t(gridDim.x) * blockDim.x) {
    const size_t r = e / k, c = e % k;
    const T x = src[c * n + r];
    if constexpr (std::is_same_v<T, float>) out[e] = x;
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) out[e] = __bfloat162float(x);
    else out[e] = __half2float(x);
  }
}

}  // namespace

void fp8_block_decode(const uint8_t* codes, size_t n, size_t k, const void* grid, bool grid_bf16,
                      size_t grid_cols, size_t block_rows, size_t block_cols, float* out,
                      unsigned long long* first_bad, cudaStream_t s) {
  if (n * k == 0) return;
  fp8_block_kernel<<<blocks_for(n * k, 256), 256, 0, s>>>(codes, n, k, grid, grid_bf16, grid_cols,
                                                          block_rows, block_cols, out, first_bad);
  check_launch("fp8_block_decode");
}

void nvfp4_decode(const uint8_t* codes, size_t code_rs, size_t code_cs, const uint8_t* scales,
                  size_t sc_rs, size_t sc_cs, size_t n, size_t k, float s2, bool divide,
                  float* out, cudaStream_t s) {
  if (n * k == 0) return;
  nvfp4_kernel<<<blocks_for(n * k, 256), 256, 0, s>>>(codes, code_rs, code_cs, scales, sc_rs,
                                                      sc_cs, n, k, s2, divide, out);
  check_launch("nvfp4_decode");
}

void mxfp4_decode(const uint8_t* blocks, const uint8_t* scales, size_t groups, float* out,
                  unsigned long long* first_bad, cudaStream_t s) {
  if (groups == 0) return;
  mxfp4_kernel<<<blocks_for(groups * 32, 256), 256, 0, s>>>(blocks, scales, groups, out,
                                                            first_bad);
  check_launch("mxfp4_decode");
}

void to_f32_transposed(const void* src, SrcType type, size_t k, size_t n, float* out,
                       cudaStream_t s) {
  if (n * k == 0) return;
  const unsigned b = blocks_for(n * k, 256);
  if (type == SrcType::F32)
    transpose_kernel<<<b, 256, 0, s>>>(static_cast<const float*>(src), k, n, out);
  else if (type == SrcType::BF16)
    transpose_kernel<<<b, 256, 0, s>>>(static_cast<const __nv_bfloat16*>(src), k, n, out);
  else
    transpose_kernel<<<b, 256, 0, s>>>(static_cast<const __half*>(src), k, n, out);
  check_launch("to_f32_transposed");
}

}  // namespace fp4kit::engine::cuda
