// Per-target pieces shared by the NVFP4 codec kernel (nvfp4_simd.cpp) and the block-scale search
// kernel (nvfp4_search_simd.cpp): input conversion to float32 and the E4M3 scale-code arithmetic,
// each the reference's float32 operation on the same operands. Highway -inl.h convention: included
// once per target from inside a file compiled with foreach_target.
#if defined(FP4KIT_NUMERIC_NVFP4_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FP4KIT_NUMERIC_NVFP4_SIMD_INL_H_
#undef FP4KIT_NUMERIC_NVFP4_SIMD_INL_H_
#else
#define FP4KIT_NUMERIC_NVFP4_SIMD_INL_H_
#endif

#include <hwy/highway.h>

#include <cstdint>

HWY_BEFORE_NAMESPACE();
namespace fp4kit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

struct Bf16In {};
struct F16In {};
struct F32In {};

template <class DF>
HWY_INLINE hn::Vec<DF> LoadF32(DF df, const unsigned char* p, F32In) {
  return hn::LoadU(df, reinterpret_cast<const float*>(p));
}
template <class DF>
HWY_INLINE hn::Vec<DF> LoadF32(DF df, const unsigned char* p, Bf16In) {
  const hn::Rebind<uint16_t, DF> d16;
  const hn::RebindToUnsigned<DF> du;
  const auto u = hn::PromoteTo(du, hn::LoadU(d16, reinterpret_cast<const uint16_t*>(p)));
  return hn::BitCast(df, hn::ShiftLeft<16>(u));  // bf16 is the top half of a float32: exact
}
template <class DF>
HWY_INLINE hn::Vec<DF> LoadF32(DF df, const unsigned char* p, F16In) {
  // IEEE binary16 -> binary32 by hand (exact; the same on every target).
  const hn::Rebind<uint16_t, DF> d16;
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto h = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d16, reinterpret_cast<const uint16_t*>(p))));
  const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(di, 0x8000)));
  const auto em = hn::And(h, hn::Set(di, 0x7FFF));
  const auto normal = hn::Add(hn::ShiftLeft<13>(em), hn::Set(di, 112 << 23));
  const auto infnan = hn::Or(hn::ShiftLeft<13>(em), hn::Set(di, 0x7F800000));
  const auto sub = hn::BitCast(di, hn::Mul(hn::ConvertTo(df, em), hn::Set(df, 0x1p-24f)));
  auto mag = hn::IfThenElse(hn::Lt(em, hn::Set(di, 0x400)), sub, normal);
  mag = hn::IfThenElse(hn::Gt(em, hn::Set(di, 0x7BFF)), infnan, mag);
  return hn::BitCast(df, hn::Or(mag, sign));
}

// The max-based scale code of blocks with max |w| = bamax (nvfp4_max_scale_code): s = bamax / den
// (den = 6 s2), 0 -> 1, clamp [2^-9, 448], E4M3 round to nearest even.
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> MaxScaleCode(DF df, hn::Vec<DF> bamax, hn::Vec<DF> den) {
  const hn::RebindToSigned<DF> di;
  auto s = hn::Div(bamax, den);
  s = hn::IfThenElse(hn::Eq(s, hn::Zero(df)), hn::Set(df, 1.0f), s);
  s = hn::Min(hn::Max(s, hn::Set(df, 0x1p-9f)), hn::Set(df, 448.0f));
  // Normal: drop 20 mantissa bits with round-half-even; the carry runs into the exponent;
  // code = (bits >> 20) - ((127 - 7) << 3).
  const auto bits = hn::BitCast(di, s);
  const auto odd = hn::And(hn::ShiftRight<20>(bits), hn::Set(di, 1));
  const auto normal = hn::Sub(
      hn::ShiftRight<20>(hn::Add(bits, hn::Add(hn::Set(di, 0x7FFFF), odd))), hn::Set(di, 960));
  // Subnormal (s < 2^-6): code = round_half_even(s * 2^9) via the 2^23 trick (exact: s * 2^9
  // is in [1, 8) and the float adds round to nearest even).
  const auto t = hn::Mul(s, hn::Set(df, 512.0f));
  const auto big = hn::Set(df, 8388608.0f);
  const auto sub = hn::ConvertTo(di, hn::Sub(hn::Add(t, big), big));
  const auto is_sub = hn::Lt(s, hn::Set(df, 0x1p-6f));
  return hn::IfThenElse(hn::RebindMask(di, is_sub), sub, normal);
}

// e4m3_to_float of codes 1..126, exact: normal (code + 960) << 20, subnormal code * 2^-9.
template <class DF>
HWY_INLINE hn::Vec<DF> DecodeE4m3(DF df, hn::Vec<hn::RebindToSigned<DF>> code) {
  const hn::RebindToSigned<DF> di;
  const auto code_is_sub = hn::Lt(code, hn::Set(di, 8));
  const auto dec_normal = hn::BitCast(df, hn::ShiftLeft<20>(hn::Add(code, hn::Set(di, 960))));
  const auto dec_sub = hn::Mul(hn::ConvertTo(df, code), hn::Set(df, 0x1p-9f));
  return hn::IfThenElse(hn::RebindMask(df, code_is_sub), dec_sub, dec_normal);
}

}  // namespace HWY_NAMESPACE
}  // namespace fp4kit
HWY_AFTER_NAMESPACE();

#endif  // FP4KIT_NUMERIC_NVFP4_SIMD_INL_H_ toggle
