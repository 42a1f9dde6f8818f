#include "fp4kit/quant/bmm_experts.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>

#include "fp4kit/error.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "fp4kit/numeric/source_formats.hpp"

namespace fp4kit {

namespace {

// The checked geometry of a BMM entry's source: E experts of [N, K] values.
struct BmmSource {
  const TensorInfo* tensor = nullptr;  // "<m>" [E, K, N] or "<m>_blocks" [E, N, K/32, 16]
  const TensorInfo* scales = nullptr;  // MXFP4 "<m>_scales" [E, N, K/32], else nullptr
  uint64_t experts = 0, n = 0, k = 0;
};

BmmSource bmm_source(const Checkpoint& ckpt, const PlanEntry& e) {
  BmmSource s;
  s.tensor = &ckpt.info(e.source.tensor);
  s.experts = e.bmm_experts;
  s.n = e.rows;
  s.k = e.cols;
  const auto& shape = s.tensor->shape;
  auto bad = [&](const std::string& what) {
    return Error(fmt::format("module '{}': BMM source tensor '{}' {}: {}", e.name,
                             e.source.tensor, dtype_name(s.tensor->dtype), what));
  };
  if (e.encoding == SourceEncoding::Mxfp4) {
    const std::vector<uint64_t> want = {s.experts, s.n, s.k / kMxfp4BlockSize,
                                        kMxfp4BlockSize / 2};
    if (s.tensor->dtype != DType::U8 || shape != want || s.k % kMxfp4BlockSize != 0)
      throw bad(fmt::format("expected MXFP4 blocks U8 [{}, {}, {}, {}]", want[0], want[1],
                            want[2], want[3]));
    if (!ckpt.has(e.source_scales))
      throw bad(fmt::format("its E8M0 scale tensor '{}' is missing", e.source_scales));
    s.scales = &ckpt.info(e.source_scales);
    const std::vector<uint64_t> want_scales = {s.experts, s.n, s.k / kMxfp4BlockSize};
    if (s.scales->dtype != DType::U8 || s.scales->shape != want_scales)
      throw Error(fmt::format("module '{}': MXFP4 scale tensor '{}' is {} [{}x{}x{}...], "
                              "expected U8 [{}, {}, {}]",
                              e.name, e.source_scales, dtype_name(s.scales->dtype),
                              s.scales->shape.size() > 0 ? s.scales->shape[0] : 0,
                              s.scales->shape.size() > 1 ? s.scales->shape[1] : 0,
                              s.scales->shape.size() > 2 ? s.scales->shape[2] : 0,
                              want_scales[0], want_scales[1], want_scales[2]));
    return s;
  }
  if (e.encoding != SourceEncoding::Plain || !dtype_is_float(s.tensor->dtype))
    throw bad("a BMM expert tensor must be BF16/F16/F32 or MXFP4");
  if (shape != std::vector<uint64_t>{s.experts, s.k, s.n})
    throw bad(fmt::format("expected shape [{}, {}, {}] ([E, K, N])", s.experts, s.k, s.n));
  return s;
}

// Expert e's byte range of a tensor whose leading dimension is the expert.
TensorInfo expert_range(const TensorInfo& t, uint64_t experts, uint64_t e) {
  TensorInfo r = t;
  const uint64_t per = t.nbytes() / experts;
  r.begin = t.begin + e * per;
  r.end = r.begin + per;
  return r;
}

void release_expert(const Checkpoint& ckpt, const TensorInfo& t, uint64_t experts, uint64_t e) {
  const auto& file = ckpt.file_of(t.name);
  file.release(expert_range(t, experts, e));
  if (e + 1 < experts) file.prefetch(expert_range(t, experts, e + 1));
}

}  // namespace

namespace {

// Transposes a square block of 8 bytes x (8 / sizeof(T)) rows held in 64-bit words: x[i] is row i
// on entry and column i on exit (swap networks on halves, then quarters, then single elements).
template <typename T>
inline void transpose_words(uint64_t* x) {
  constexpr int kB = 8 / sizeof(T);
  constexpr uint64_t kMasks[3] = {0x00FF00FF00FF00FFull, 0x0000FFFF0000FFFFull,
                                  0x00000000FFFFFFFFull};
  for (int stage = sizeof(T) == 1 ? 0 : sizeof(T) == 2 ? 1 : 2, d = 1; d < kB; ++stage, d *= 2) {
    const int shift = 8 << stage;
    for (int i = 0; i < kB; ++i) {
      if (i & d) continue;
      const uint64_t t = ((x[i] >> shift) ^ x[i + d]) & kMasks[stage];
      x[i + d] ^= t;
      x[i] ^= t << shift;
    }
  }
}

// Tiled transpose of T elements: a 64x64 tile stays in L1 for both the reads and the writes;
// inside it, full blocks go through transpose_words, the ragged edges element by element.
template <typename T>
void transpose_tiled(const T* in, uint64_t rows, uint64_t cols, T* out) {
  constexpr uint64_t kTile = 64, kB = 8 / sizeof(T);
  const uint64_t row_tiles = (rows + kTile - 1) / kTile;
  parallel_for(0, row_tiles, 1, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) {
      const uint64_t r0 = t * kTile, r1 = std::min(rows, r0 + kTile);
      for (uint64_t c0 = 0; c0 < cols; c0 += kTile) {
        const uint64_t c1 = std::min(cols, c0 + kTile);
        uint64_t rb = r0;
        for (; rb + kB <= r1; rb += kB) {
          uint64_t cb = c0;
          for (; cb + kB <= c1; cb += kB) {
            uint64_t x[kB];
            for (uint64_t i = 0; i < kB; ++i) std::memcpy(&x[i], in + (rb + i) * cols + cb, 8);
            transpose_words<T>(x);
            for (uint64_t j = 0; j < kB; ++j) std::memcpy(out + (cb + j) * rows + rb, &x[j], 8);
          }
          for (uint64_t c = cb; c < c1; ++c)
            for (uint64_t r = rb; r < rb + kB; ++r) out[c * rows + r] = in[r * cols + c];
        }
        for (uint64_t c = c0; c < c1; ++c)
          for (uint64_t r = rb; r < r1; ++r) out[c * rows + r] = in[r * cols + c];
      }
    }
  });
}

}  // namespace

void transpose_bytes(const uint8_t* in, uint64_t rows, uint64_t cols, size_t elem, uint8_t* out) {
  // Typed copies: a per-element memcpy of a run-time size was 3/4 of the BMM quantize time.
  switch (elem) {
    case 1: return transpose_tiled(in, rows, cols, out);
    case 2:
      return transpose_tiled(reinterpret_cast<const uint16_t*>(in), rows, cols,
                             reinterpret_cast<uint16_t*>(out));
    case 4:
      return transpose_tiled(reinterpret_cast<const uint32_t*>(in), rows, cols,
                             reinterpret_cast<uint32_t*>(out));
    default:
      throw Error(fmt::format("transpose: element size {} not supported", elem));
  }
}

SourceView bmm_expert_view(const Checkpoint& ckpt, const PlanEntry& e, uint64_t expert,
                           std::vector<uint8_t>& buffer) {
  const BmmSource s = bmm_source(ckpt, e);
  if (expert >= s.experts)
    throw Error(fmt::format("module '{}': expert {} out of range ({} experts)", e.name, expert,
                            s.experts));
  const uint64_t count = s.n * s.k;
  SourceView v;
  v.rows = s.n;
  v.cols = s.k;
  if (e.encoding == SourceEncoding::Mxfp4) {
    const uint64_t groups = count / kMxfp4BlockSize;
    buffer.resize(count * sizeof(float));
    mxfp4_dequantize(ckpt.bytes(e.source.tensor).data() + expert * groups * (kMxfp4BlockSize / 2),
                     ckpt.bytes(e.source_scales).data() + expert * groups, groups,
                     reinterpret_cast<float*>(buffer.data()), e.source_scales);
    v.dtype = DType::F32;
  } else {
    const size_t es = dtype_size(s.tensor->dtype);
    buffer.resize(count * es);
    transpose_bytes(ckpt.bytes(e.source.tensor).data() + expert * count * es, s.k, s.n, es,
                    buffer.data());
    v.dtype = s.tensor->dtype;
  }
  v.data = buffer.data();
  return v;
}

namespace {

// max |w| of the MXFP4 blocks [g0, g1): per block, the largest |code| times 2^(scale - 127), as
// mxfp4_dequantize computes it (bit-identical to the max of the decoded values).
float mxfp4_amax(const BmmSource& s, const PlanEntry& e, const uint8_t* blocks,
                 const uint8_t* scales, uint64_t g0, uint64_t g1) {
  static const float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  std::mutex mu;
  float amax = 0;
  parallel_for(g0, g1, 4096, [&](size_t a0, size_t a1) {
    float local = 0;
    for (size_t g = a0; g < a1; ++g) {
      if (scales[g] == 0xFF)
        throw Error(fmt::format("MXFP4 scale tensor '{}': block {} has the NaN scale 0xFF",
                                e.source_scales, g));
      uint8_t top = 0;
      const uint8_t* b = blocks + g * (kMxfp4BlockSize / 2);
      for (size_t j = 0; j < kMxfp4BlockSize / 2; ++j)
        top = std::max<uint8_t>(top, std::max<uint8_t>(b[j] & 0x07, (b[j] >> 4) & 0x07));
      const float block_amax =
          kMagnitude[top] * std::ldexp(1.0f, static_cast<int>(scales[g]) - 127);
      if (!std::isfinite(block_amax)) {
        const uint64_t per_row = s.k / kMxfp4BlockSize, row = g / per_row;
        throw Error(fmt::format("MXFP4 scale tensor '{}': expert {}, row {}, block {}: scale "
                                "2^{} times code {} overflows float32 (decodes to inf)",
                                e.source_scales, row / s.n, row % s.n, g % per_row,
                                static_cast<int>(scales[g]) - 127, kMagnitude[top]));
      }
      local = std::max(local, block_amax);
    }
    std::lock_guard<std::mutex> lock(mu);
    amax = std::max(amax, local);
  });
  return amax;
}

}  // namespace

float bmm_amax(const Checkpoint& ckpt, const PlanEntry& e) {
  const BmmSource s = bmm_source(ckpt, e);
  // Expert by expert, each one's pages released after it: the quantize pass reads them again
  // (from the page cache), so RSS holds about one expert rather than the whole 3-D tensor.
  const uint8_t* data = ckpt.bytes(e.source.tensor).data();
  const uint64_t per = s.tensor->nbytes() / s.experts;
  const uint64_t groups = s.n * s.k / kMxfp4BlockSize;  // MXFP4 blocks per expert
  float amax = 0;
  for (uint64_t x = 0; x < s.experts; ++x) {
    if (e.encoding == SourceEncoding::Plain) {  // the max does not care about the orientation
      try {
        amax = std::max(amax, tensor_amax(data + x * per, s.tensor->dtype, s.k, s.n));
      } catch (const Error& err) {  // rows and columns of expert x's [K, N] matrix
        throw Error(fmt::format("expert {} of '{}': {}", x, e.source.tensor, err.what()));
      }
    } else
      amax = std::max(amax, mxfp4_amax(s, e, data, ckpt.bytes(e.source_scales).data(),
                                       x * groups, (x + 1) * groups));
    release_expert(ckpt, *s.tensor, s.experts, x);
    if (s.scales) release_expert(ckpt, *s.scales, s.experts, x);
  }
  // The quantize pass starts over at expert 0.
  ckpt.file_of(s.tensor->name).prefetch(expert_range(*s.tensor, s.experts, 0));
  return amax;
}

DistortionStats bmm_quantize(const Checkpoint& ckpt, const PlanEntry& e, float s2,
                             const QuantOptions& options, ScaleOutcome& outcome,
                             const BmmExpertBytes& on_expert, std::vector<uint8_t>& scales) {
  const BmmSource s = bmm_source(ckpt, e);
  if (s.k % kNvfp4Block != 0)
    throw Error(fmt::format("module '{}': K = {} is not a multiple of 16 (plan error)", e.name,
                            s.k));
  const uint64_t packed_per = s.n * s.k / 2, scales_per = s.n * s.k / kNvfp4Block;
  scales.resize(s.experts * scales_per);
  std::vector<uint8_t> values, expert_packed(packed_per), expert_scales(scales_per);
  DistortionStats total;
  uint64_t fell_back = 0;
  ScaleOutcome first_fallback;
  for (uint64_t x = 0; x < s.experts; ++x) {
    const SourceView v = bmm_expert_view(ckpt, e, x, values);
    try {
      // Per-expert statistics (Hessian blocks, token count) under the expert's own stats name.
      const std::string stats_name = bmm_expert_stats_name(e.name, x);
      outcome = encode_weight(v, s2, options, stats_name, expert_packed.data(),
                              expert_scales.data());
      if (outcome.method != options.scales && fell_back++ == 0) {
        first_fallback = outcome;
        first_fallback.detail = stats_name + (outcome.detail.empty() ? "" : ": " + outcome.detail);
      }
    } catch (const Error& err) {
      throw Error(fmt::format("module '{}' (source tensor '{}', expert {}): {}", e.name,
                              e.source.tensor, x, err.what()));
    }
    total.merge(outcome.error ? *outcome.error
                              : nvfp4_distortion(v.data, v.dtype, v.rows, v.cols,
                                                 expert_packed.data(), expert_scales.data(), s2));
    // [N, K/2] -> [K/2, N] and [N, K/16] -> [K/16, N]: bytes, as ModelOpt transposes back.
    std::vector<uint8_t> packed(packed_per);
    transpose_bytes(expert_packed.data(), s.n, s.k / 2, 1, packed.data());
    transpose_bytes(expert_scales.data(), s.n, s.k / kNvfp4Block, 1,
                    scales.data() + x * scales_per);
    // This expert's source pages go back to the kernel (bounded RSS, as 2-D entries do), and
    // the next expert's are asked for while this loop goes on.
    release_expert(ckpt, *s.tensor, s.experts, x);
    if (s.scales) release_expert(ckpt, *s.scales, s.experts, x);
    on_expert(x, std::move(packed));
  }
  if (fell_back > 0) {  // the report's one line for the tensor says how many experts and why
    outcome = first_fallback;
    outcome.fallback = fmt::format("{} of {} experts: {}", fell_back, s.experts,
                                   first_fallback.fallback);
  }
  outcome.error = total;
  return total;
}

std::vector<uint8_t> bmm_dequantize_to_bf16(const Checkpoint& ckpt, const PlanEntry& e) {
  const BmmSource s = bmm_source(ckpt, e);
  if (e.encoding != SourceEncoding::Mxfp4)
    throw Error(fmt::format("module '{}': only MXFP4 BMM sources are dequantized to BF16",
                            e.name));
  const uint64_t count = s.n * s.k;
  std::vector<uint8_t> out(s.experts * count * 2), values, bf16(count * 2);
  for (uint64_t x = 0; x < s.experts; ++x) {
    const SourceView v = bmm_expert_view(ckpt, e, x, values);
    const float* f = reinterpret_cast<const float*>(v.data);
    for (uint64_t i = 0; i < count; ++i) {
      const uint16_t b = float_to_bf16(f[i]);  // exact: E2M1 x 2^k fits BF16's 8 bits
      std::memcpy(bf16.data() + 2 * i, &b, 2);
    }
    transpose_bytes(bf16.data(), s.n, s.k, 2, out.data() + x * count * 2);  // [N, K] -> [K, N]
  }
  return out;
}

}  // namespace fp4kit
