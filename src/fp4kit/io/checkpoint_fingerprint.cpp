#include "fp4kit/io/checkpoint_fingerprint.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cstdint>

#include "fp4kit/io/checkpoint.hpp"

namespace fp4kit {

namespace {

// FNV-1a, 64 bit: not cryptographic, only to tell models apart.
struct Fnv1a {
  uint64_t h = 1469598103934665603ull;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  }
  void add_u64(uint64_t v) { add(&v, sizeof v); }
};

}  // namespace

std::string checkpoint_fingerprint(const Checkpoint& ckpt) {
  constexpr size_t kBytesPerTensor = 256;
  Fnv1a f;
  for (const std::string& name : ckpt.tensor_names()) {
    const TensorInfo& t = ckpt.info(name);
    f.add(name.data(), name.size());
    f.add_u64(static_cast<uint64_t>(t.dtype));
    f.add_u64(t.shape.size());
    for (uint64_t d : t.shape) f.add_u64(d);
    const auto bytes = ckpt.bytes(name);
    f.add(bytes.data(), std::min(bytes.size(), kBytesPerTensor));
  }
  return fmt::format("{:016x}", f.h);
}

}  // namespace fp4kit
