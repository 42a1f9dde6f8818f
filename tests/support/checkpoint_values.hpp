#pragma once
// Reading tensors of a checkpoint back in tests: raw bytes, a scalar F32, values as float32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/convert.hpp"

namespace fp4kit::testing {

inline std::vector<uint8_t> bytes_of(const Checkpoint& c, const std::string& name) {
  const auto b = c.bytes(name);
  return {b.begin(), b.end()};
}

// A 4-byte F32 tensor (0-d or [1]) as float; records a failure for any other size.
inline float scalar_f32(const Checkpoint& c, const std::string& name) {
  const auto b = c.bytes(name);
  EXPECT_EQ(b.size(), 4u) << name;
  float v = 0;
  if (b.size() == 4) std::memcpy(&v, b.data(), 4);
  return v;
}

// Every element of a float tensor (BF16/F16/F32/...) as float32.
inline std::vector<float> decode(const Checkpoint& c, const std::string& name) {
  const auto& info = c.info(name);
  std::vector<float> v(info.numel());
  decode_to_f32(c.bytes(name).data(), info.dtype, v.size(), v.data());
  return v;
}

inline float amax_of(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace fp4kit::testing
