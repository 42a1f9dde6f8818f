// SIMD NVFP4 quantization, bit-identical to nvfp4_quantize_ref (NVFP4-SPEC.md section 2).
// Compiled once per instruction set by Highway's foreach_target and picked at run time.
//
// A row is handled in chunks of up to 64 blocks (1 KiB..4 KiB of input, L1-resident):
//   1. block amax as the max of |bits| (integer max: exact, and NaN/Inf show up as >= 0x7F800000);
//   2. all block scales of the chunk at once: s = bamax / den, s==0 -> 1, clamp, E4M3 RNE, d;
//   3. codes: x / d (true IEEE division, never a reciprocal), E2M1 by rounding the float bits,
//      two codes per byte.
// Each step is the reference's float32 operation on the same operands, so the bits agree.
// On request, step 3 also measures the error while the block is in registers: the decoded value
// (e2m1 x scale) x s2, the very product nvfp4_dequantize_row forms, against the input, summed in
// nvfp4_distortion's lanes and order (distortion.hpp), so the statistics are bit-identical to that
// second pass without reading the tensor again. Compiled with -ffp-contract=off (no fused
// multiply-add here or in the reference).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "fp4kit/numeric/nvfp4_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cstring>

#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/dtype.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4_simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp4kit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most one block (16 floats) per vector, so a block is a whole number of vectors.
using DF = hn::CappedTag<float, 16>;
using DI = hn::RebindToSigned<DF>;

constexpr size_t kChunkBlocks = 64;

#undef FP4KIT_BLOCKMAX_TREE  // this file is compiled once per target: decide again each time
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define FP4KIT_BLOCKMAX_TREE 1
// Maxima of 16 vectors of 16 int32 lanes (one block each) at once, returned in block order:
// a max-tree of 128-bit, 64-bit and 32-bit shuffles costs about 3 instructions per block, where
// one horizontal reduction per block costs about 9.
HWY_INLINE __m512i BlockMax16(const __m512i a[16]) {
  __m512i b[8], c[4], d[2];
  for (int i = 0; i < 8; ++i)  // quarters: [2i: q0|q2, 2i: q1|q3, 2i+1: q0|q2, 2i+1: q1|q3]
    b[i] = _mm512_max_epi32(_mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], 0x44),
                            _mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], 0xEE));
  for (int j = 0; j < 4; ++j)  // quarter q: 4 lanes of block 4j + q
    c[j] = _mm512_max_epi32(_mm512_shuffle_i32x4(b[2 * j], b[2 * j + 1], 0x88),
                            _mm512_shuffle_i32x4(b[2 * j], b[2 * j + 1], 0xDD));
  for (int k = 0; k < 2; ++k)  // quarter q: lanes 0,1 of block 8k + q, lanes 2,3 of block 8k + 4 + q
    d[k] = _mm512_max_epi32(_mm512_unpacklo_epi64(c[2 * k], c[2 * k + 1]),
                            _mm512_unpackhi_epi64(c[2 * k], c[2 * k + 1]));
  const __m512i e0 = _mm512_max_epi32(d[0], _mm512_shuffle_epi32(d[0], _MM_PERM_CDAB));
  const __m512i e1 = _mm512_max_epi32(d[1], _mm512_shuffle_epi32(d[1], _MM_PERM_CDAB));
  // Lane 4q + k holds block q + {0, 8, 4, 12}[k]; put block b in lane b.
  const __m512i f = _mm512_mask_blend_epi32(0xAAAA, e0, e1);
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15);
  return _mm512_permutexvar_epi32(order, f);
}
#endif

// `given`: null, or the block scale codes to encode with (searched scales); then `scales` is not
// written and steps 1-2 only convert the input and check it for NaN/Inf. `lanes`: null, or the
// row's error statistics to accumulate (zeroed by the caller).
template <class In>
HWY_INLINE bool QuantizeRow(const unsigned char* src, size_t cols, size_t esize, float s2,
                            uint8_t* packed, uint8_t* scales, const uint8_t* given,
                            detail::RowLanes* lanes) {
  const DF df;
  const DI di;
  const size_t N = hn::Lanes(df);
  const float den = 6.0f * s2;
  HWY_ALIGN float bamax[kChunkBlocks];
  HWY_ALIGN float dvals[kChunkBlocks];
  HWY_ALIGN float sfvals[kChunkBlocks];  // decoded block scales (for the error statistics)
  HWY_ALIGN int32_t sfcodes[kChunkBlocks];
  HWY_ALIGN float xbuf[kChunkBlocks * 16];  // the chunk as float32, converted once in step 1
  const size_t nblocks = cols / 16;
  for (size_t b0 = 0; b0 < nblocks; b0 += kChunkBlocks) {
    const size_t nb = nblocks - b0 < kChunkBlocks ? nblocks - b0 : kChunkBlocks;
    const unsigned char* in = src + b0 * 16 * esize;

    // 1. Block amax over |bits|.
    int32_t worst = 0;
    size_t b_done = 0;
#ifdef FP4KIT_BLOCKMAX_TREE
    {
      auto worst_v = hn::Zero(di);
      for (; b_done + 16 <= nb; b_done += 16) {
        __m512i a[16];
        for (size_t i = 0; i < 16; ++i) {
          const auto v = LoadF32(df, in + (b_done + i) * 16 * esize, In());
          hn::Store(v, df, xbuf + (b_done + i) * 16);
          a[i] = hn::And(hn::BitCast(di, v), hn::Set(di, 0x7FFFFFFF)).raw;
        }
        const hn::Vec<DI> m{BlockMax16(a)};
        worst_v = hn::Max(worst_v, m);
        hn::Store(hn::BitCast(df, m), df, bamax + b_done);
      }
      worst = hn::GetLane(hn::MaxOfLanes(di, worst_v));
    }
#endif
    for (size_t b = b_done; b < nb; ++b) {
      auto m = hn::Zero(di);
      for (size_t k = 0; k < 16; k += N) {
        const auto f = LoadF32(df, in + (b * 16 + k) * esize, In());
        hn::Store(f, df, xbuf + b * 16 + k);
        const auto v = hn::BitCast(di, f);
        m = hn::Max(m, hn::And(v, hn::Set(di, 0x7FFFFFFF)));
      }
      const int32_t mb = hn::GetLane(hn::MaxOfLanes(di, m));
      worst = mb > worst ? mb : worst;
      std::memcpy(&bamax[b], &mb, 4);
    }
    if (worst >= 0x7F800000) return false;  // NaN or Inf somewhere in this row
    for (size_t b = nb; b < kChunkBlocks; ++b) bamax[b] = 0.0f;

    // 2. Scales of the whole chunk, N blocks at a time.
    const auto vden = hn::Set(df, den), vs2 = hn::Set(df, s2);
    const auto one = hn::Set(df, 1.0f), zero = hn::Zero(df);
    for (size_t b = 0; b < nb; b += N) {
      const auto code = MaxScaleCode(df, hn::Load(df, bamax + b), vden);
      const auto sfv = DecodeE4m3(df, code);
      hn::Store(hn::Mul(sfv, vs2), df, dvals + b);
      hn::Store(sfv, df, sfvals + b);
      hn::Store(code, di, sfcodes + b);
    }
    if (given) {
      for (size_t b = 0; b < nb; ++b) {
        sfvals[b] = e4m3_to_float(given[b0 + b]);
        dvals[b] = sfvals[b] * s2;
      }
    } else {
      for (size_t b = 0; b < nb; ++b) scales[b0 + b] = static_cast<uint8_t>(sfcodes[b]);
    }

    // 3. Element codes.
    const auto six = hn::Set(df, 6.0f), two22 = hn::Set(df, 4194304.0f);
    const auto two22_bits = hn::Set(di, 0x4A800000);
    // 0x1FFFFF rounds half up on the 22 dropped bits (+1 for odd = half to even); minus 252 << 22
    // turns the exponent-and-mantissa field of 1.0 into code 2.
    const auto round22 = hn::Set(di, 0x1FFFFF - (252 << 22));
    const auto one_i = hn::Set(di, 1), eight = hn::Set(di, 8);
    const auto two_i = hn::Set(di, 2), e2m1_bias = hn::Set(di, 252);
    const auto half = hn::Set(df, 0.5f);
    uint8_t* out = packed + b0 * 8;
    for (size_t b = 0; b < nb; ++b) {
      const auto vd = hn::Set(df, dvals[b]);
      for (size_t k = 0; k < 16; k += N) {
        const auto x = hn::Load(df, xbuf + b * 16 + k);
        const auto y = hn::Div(x, vd);
        // E2M1 magnitude of a = min(|y|, 6) (values > 6 saturate; 5 < a <= 6 rounds to 6 anyway).
        // a >= 1: round the float to 1 mantissa bit, half to even, with the carry running into
        //   the exponent; code = rounded bits >> 22, less (127 << 1) - 2 (1.0 -> 2, 6.0 -> 7); the
        //   subtraction is folded into the rounding constant.
        // a < 1: the step is 0.5 as in [1, 2), so code = round_half_even(2a): adding 2^22 (whose
        //   ulp is 0.5) rounds a to halves, and the low mantissa bits are then 2a.
        // Taking that second form on min(a, 1) it never exceeds the first for a >= 1 and is the
        // larger one for a < 1 (where the first is <= round(4a) - 2 <= round(2a), or negative),
        // so code = max of the two: no compare-and-select.
        const auto a = hn::Min(hn::Abs(y), six);
        const auto bits = hn::BitCast(di, a);
        const auto odd = hn::And(hn::ShiftRight<22>(bits), one_i);
        const auto normal = hn::ShiftRight<22>(hn::Add(bits, hn::Add(round22, odd)));
        const auto halves = hn::Sub(hn::BitCast(di, hn::Add(hn::Min(a, one), two22)), two22_bits);
        const auto idx = hn::Max(normal, halves);
        if (lanes) {
          // |e2m1 value| of idx: idx / 2 below 1.0, else the float with exponent-and-mantissa
          // field idx + 252 (the inverse of the rounding above: 2 -> 1.0, 7 -> 6.0).
          const auto mag = hn::IfThenElse(
              hn::RebindMask(df, hn::Lt(idx, two_i)), hn::Mul(hn::ConvertTo(df, idx), half),
              hn::BitCast(df, hn::ShiftLeft<22>(hn::Add(idx, e2m1_bias))));
          const auto vabs = hn::Mul(hn::Mul(mag, hn::Set(df, sfvals[b])), vs2);
          const auto v = hn::IfThenElse(hn::Lt(y, zero), hn::Neg(vabs), vabs);
          const auto e = hn::Sub(v, x);
          float* l_ref = lanes->sum_sq_ref + k;
          float* l_err = lanes->sum_sq_err + k;
          float* l_max = lanes->max_abs_err + k;
          float* l_flip = lanes->sign_flips + k;
          float* l_zero = lanes->rounded_to_zero + k;
          hn::StoreU(hn::Add(hn::LoadU(df, l_ref), hn::Mul(x, x)), df, l_ref);
          hn::StoreU(hn::Add(hn::LoadU(df, l_err), hn::Mul(e, e)), df, l_err);
          hn::StoreU(hn::Max(hn::LoadU(df, l_max), hn::Abs(e)), df, l_max);
          const auto flip = hn::Or(hn::And(hn::Gt(x, zero), hn::Lt(v, zero)),
                                   hn::And(hn::Lt(x, zero), hn::Gt(v, zero)));
          hn::StoreU(hn::Add(hn::LoadU(df, l_flip), hn::IfThenElseZero(flip, one)), df, l_flip);
          const auto lost = hn::And(hn::Ne(x, zero), hn::Eq(v, zero));
          hn::StoreU(hn::Add(hn::LoadU(df, l_zero), hn::IfThenElseZero(lost, one)), df, l_zero);
        }
        // Sign from y < 0 before rounding (a small negative gives 0x8; -0.0 gives 0x0).
#ifdef FP4KIT_BLOCKMAX_TREE
        const hn::Vec<DI> code{_mm512_mask_or_epi32(idx.raw, hn::Lt(y, zero).raw, idx.raw, eight.raw)};
#else
        const auto code = hn::Or(idx, hn::IfThenElseZero(hn::RebindMask(di, hn::Lt(y, zero)), eight));
#endif
#if HWY_TARGET == HWY_SCALAR
        HWY_ALIGN int32_t c[1];
        hn::Store(code, di, c);
        uint8_t* o = out + (b * 16 + k) / 2;
        *o = (k & 1) ? static_cast<uint8_t>(*o | (c[0] << 4)) : static_cast<uint8_t>(c[0]);
#else
        // Pairs of int32 lanes as one u64 (even lane low): lo | hi << 32 -> low byte lo | hi << 4.
        const hn::Repartition<uint64_t, DI> d64;
        const auto x64 = hn::BitCast(d64, code);
        const auto pairs = hn::Or(x64, hn::ShiftRight<28>(x64));
#ifdef FP4KIT_BLOCKMAX_TREE
        // One vpmovqb (Highway 1.0.3's TruncateTo spends four shuffles here).
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out + (b * 16 + k) / 2),
                         _mm512_cvtepi64_epi8(pairs.raw));
#else
        const hn::Rebind<uint8_t, decltype(d64)> d8;
        hn::StoreU(hn::TruncateTo(d8, pairs), d8, out + (b * 16 + k) / 2);
#endif
#endif
      }
    }
  }
  return true;
}

// `stats`: null, or where each row's error statistics are added, rows in order.
bool QuantizeRows(const void* src, int dtype, size_t rows, size_t cols, float s2, uint8_t* packed,
                  uint8_t* scales, const uint8_t* given, DistortionStats* stats) {
  const auto* base = static_cast<const unsigned char*>(src);
  const size_t nb = cols / 16;
  detail::RowLanes row_lanes;
  detail::RowLanes* lanes = stats ? &row_lanes : nullptr;
  for (size_t r = 0; r < rows; ++r) {
    if (lanes) row_lanes = {};
    bool ok;
    switch (static_cast<DType>(dtype)) {
      case DType::BF16:
        ok = QuantizeRow<Bf16In>(base + r * cols * 2, cols, 2, s2, packed + r * cols / 2, scales + r * nb,
                                 given ? given + r * nb : nullptr, lanes);
        break;
      case DType::F16:
        ok = QuantizeRow<F16In>(base + r * cols * 2, cols, 2, s2, packed + r * cols / 2, scales + r * nb,
                                 given ? given + r * nb : nullptr, lanes);
        break;
      default:
        ok = QuantizeRow<F32In>(base + r * cols * 4, cols, 4, s2, packed + r * cols / 2, scales + r * nb,
                                 given ? given + r * nb : nullptr, lanes);
        break;
    }
    if (!ok) return false;
    if (stats) detail::fold_row(row_lanes, cols, *stats);
  }
  return true;
}

int64_t CurrentTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace fp4kit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "fp4kit/numeric/nvfp4_simd.hpp"

namespace fp4kit {
HWY_EXPORT(QuantizeRows);
HWY_EXPORT(CurrentTarget);

namespace detail {

bool nvfp4_simd_supports(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32;
}

bool nvfp4_quantize_rows_simd(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                              uint8_t* packed, uint8_t* scales, DistortionStats* stats) {
  return HWY_DYNAMIC_DISPATCH(QuantizeRows)(src, static_cast<int>(dtype), rows, cols, s2, packed,
                                            scales, nullptr, stats);
}

bool nvfp4_encode_rows_simd(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                            const uint8_t* scales, uint8_t* packed, DistortionStats* stats) {
  return HWY_DYNAMIC_DISPATCH(QuantizeRows)(src, static_cast<int>(dtype), rows, cols, s2, packed,
                                            nullptr, scales, stats);
}

std::string nvfp4_simd_target() { return hwy::TargetName(HWY_DYNAMIC_DISPATCH(CurrentTarget)()); }

std::vector<int64_t> nvfp4_simd_targets() { return hwy::SupportedAndGeneratedTargets(); }

}  // namespace detail
}  // namespace fp4kit
#endif  // HWY_ONCE
