#pragma once
// What the model and plan layers need to know about one checkpoint tensor: name, dtype, shape.
// Kept separate from io's TensorInfo so plans can be built (and tested) from plain lists.
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

struct TensorMeta {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<uint64_t> shape;

  uint64_t numel() const {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    return n;
  }
  uint64_t nbytes() const { return numel() * dtype_size(dtype); }
};

}  // namespace fp4kit
