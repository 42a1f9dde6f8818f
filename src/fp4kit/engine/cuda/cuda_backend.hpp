#pragma once
// The CUDA backend of the engine (backend.hpp): device memory from CUDA's stream-ordered pool, every
// op a kernel of kernels.hpp or a cuBLAS product on one stream, so the blocks and families of the
// CPU engine run unchanged on the GPU. Routing is computed on the host by the CPU engine's own
// code from the downloaded logits (the same expert choice and weights as on the CPU, bit for bit);
// column statistics are reduced on the GPU and only [k] values come back. BF16/F16/F32 linears
// travel as stored (pinned staging on all cores) and are widened on the GPU; the next layer's are
// moved while the current one computes (prefetch.hpp; FP4KIT_CUDA_PREFETCH=0 turns it off; the
// router product is always plain float32 (Linear::exact)). The Gated DeltaNet
// ops run on the host with the CPU backend's code (download, compute, upload) for now.
#include <memory>

#include "fp4kit/engine/backend.hpp"

namespace fp4kit::engine::cuda {

struct BackendOptions {
  int device = 0;
  bool tf32 = true;  // false: plain float32 products
};

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);

}  // namespace fp4kit::engine::cuda
