#include "fp4kit/numeric/nonfinite.hpp"

#include <atomic>
#include <cstring>

#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {
namespace {

// An IEEE-like format: all exponent bits set is Inf (mantissa 0) or NaN (mantissa not 0).
template <class U>
NonFiniteCount count_ieee(const unsigned char* p, size_t begin, size_t end, U exp_mask, U man_mask) {
  // First the cheap, vectorizable question "any exponent all ones?"; the split only then.
  uint64_t special = 0;
  for (size_t i = begin; i < end; ++i) {
    U v;
    std::memcpy(&v, p + i * sizeof(U), sizeof(U));
    special += (v & exp_mask) == exp_mask;
  }
  NonFiniteCount c;
  if (special == 0) return c;
  for (size_t i = begin; i < end; ++i) {
    U v;
    std::memcpy(&v, p + i * sizeof(U), sizeof(U));
    if ((v & exp_mask) != exp_mask) continue;
    if (v & man_mask) ++c.nan;
    else ++c.inf;
  }
  return c;
}

NonFiniteCount count_range(const unsigned char* p, DType dtype, size_t begin, size_t end) {
  switch (dtype) {
    case DType::BF16: return count_ieee<uint16_t>(p, begin, end, 0x7F80, 0x007F);
    case DType::F16: return count_ieee<uint16_t>(p, begin, end, 0x7C00, 0x03FF);
    case DType::F32: return count_ieee<uint32_t>(p, begin, end, 0x7F800000u, 0x007FFFFFu);
    case DType::F64:
      return count_ieee<uint64_t>(p, begin, end, 0x7FF0000000000000ull, 0x000FFFFFFFFFFFFFull);
    case DType::F8_E5M2: return count_ieee<uint8_t>(p, begin, end, 0x7C, 0x03);
    case DType::F8_E4M3: {  // fn: S.1111.111 is NaN, no Inf
      NonFiniteCount c;
      for (size_t i = begin; i < end; ++i) c.nan += (p[i] & 0x7F) == 0x7F;
      return c;
    }
    case DType::F8_E8M0: {  // 0xFF is NaN
      NonFiniteCount c;
      for (size_t i = begin; i < end; ++i) c.nan += p[i] == 0xFF;
      return c;
    }
    default: return {};
  }
}

}  // namespace

NonFiniteCount count_nonfinite(const void* data, DType dtype, size_t count) {
  const auto* p = static_cast<const unsigned char*>(data);
  constexpr size_t kGrain = size_t{1} << 20;  // elements per task: small tensors stay on this thread
  if (count <= kGrain) return count_range(p, dtype, 0, count);
  std::atomic<uint64_t> nan{0}, inf{0};
  parallel_for(0, count, kGrain, [&](size_t b, size_t e) {
    const NonFiniteCount c = count_range(p, dtype, b, e);
    nan += c.nan;
    inf += c.inf;
  });
  return {nan.load(), inf.load()};
}

}  // namespace fp4kit
