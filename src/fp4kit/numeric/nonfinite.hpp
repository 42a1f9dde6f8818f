#pragma once
// Counts NaN and Inf values of a tensor from its bits (no decoding): one fast pass for the
// tensors copied unchanged (norms, routers, embeddings), which nothing else looks at.
#include <cstddef>
#include <cstdint>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

struct NonFiniteCount {
  uint64_t nan = 0, inf = 0;
  uint64_t total() const { return nan + inf; }
};

// `count` elements of `dtype` at `data`; integer and bool types hold neither (zero counts).
// E4M3 (fn) and E8M0 have NaN codes and no Inf. Runs on all threads for large tensors.
NonFiniteCount count_nonfinite(const void* data, DType dtype, size_t count);

}  // namespace fp4kit
