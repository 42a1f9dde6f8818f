// SIMD block-scale search (nvfp4_search.hpp), with exactly the result of the scalar reference.
// Compiled once per instruction set by Highway's foreach_target, with -ffp-contract=off.
//
// Lanes are rows: a lane group is up to 16 consecutive rows, and one column block j at a time, so
// a block's Hessian H_j is the same for every lane (broadcast). Every candidate the kernel scores
// is scored exactly as the reference scores it (same float32 operations, same order), so the
// argmin over the scored codes, with the tie rule, is the reference's as long as every code it
// skips is provably not preferred. Codes are skipped by these rules:
//   all-zero: when every element of a block rounds to 0 under code c, every larger code does too
//     and ties with c while lying farther from the max-based code, so it loses;
//   exact:    once the best objective is 0, a code farther from the max-based code than the best
//     can at most tie, and loses;
//   down (MSE): elements with |w|/d > 6 saturate for every smaller scale too, with a larger error,
//     so their sum bounds every smaller code's MSE (checked with a 2^-10 margin for the rounding
//     of d and 6 d);
//   octave (MSE): the scale of code c + 8 is exactly twice that of code c (normal E4M3), so
//     |w|/d halves exactly and the grid {0,.5,1,1.5,2,3,4,6} * d of code c contains every point
//     of code c + 8m's grid below 6 d; when the largest |w| of the block is below 7 d(c), each
//     element's nearest grid point under c + 8m (m >= 1) is no nearer than under c (the same
//     point gives the same float32 error; another point is one of c's, or 6 d(c) when the
//     element is nearer to it). So c's objective is at most c + 8m's plus float32 rounding:
//     with B the best objective so far, E(c) > B + B 2^-16 + 2^-12 amax sqrt(B) + 2^-26 amax^2
//     proves E(c + 8m) > B for every m whose code is not all-zero, and an all-zero code scores
//     sum w^2 exactly, so it loses when that is above B. (Rounding: with u = 2^-24, z = |w|/d
//     before rounding and D = d(c + 8m) <= 4 amax (not all-zero), each element's float32 error
//     under c exceeds its error under c + 8m by at most 3u|e| + 21u D (the quotient's rounding
//     moves z by uz, the product's by u q D), and the two 16-term sums differ by at most 17u
//     relatively: E(c) <= (1 + 42u) E(c + 8m) + 174u D sqrt(E(c + 8m)) + 7100u^2 D^2, each term
//     at least 4x inside the margin above.)
// The MSE search therefore scores the max-based code and the 6 codes above it (the optimum is
// often 3-6 codes up: amax lands on 4 rather than 6), walks down under the down rule (its first
// code, base - 1, is the class of base + 7), and then, per residue class of codes modulo 8,
// scores the next code up only while the octave rule cannot drop the class (typically once: the
// class of the best code): about 11 scored codes per block on Gaussian weights, where walking up
// until a per-element bound stops took about 20 per lane group. The Hessian objective has no
// such bounds: its up direction stops on all-zero or exact, its down direction walks to code 1.
// The lane group's block is loaded and transposed in registers on AVX-512 (elsewhere through
// memory); its max-based codes come from the codec's vector code (nvfp4_simd-inl.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "fp4kit/numeric/nvfp4_search_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/dtype.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_search.hpp"
#include "fp4kit/numeric/nvfp4_search_simd.hpp"
#include "fp4kit/numeric/nvfp4_simd.hpp"
#include "fp4kit/numeric/nvfp4_simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp4kit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::CappedTag<float, 16>;
using DI = hn::RebindToSigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// Objective of scale codes `code` (one per lane) for the lane group xt [16][L] (kHess: signed
// weights, else |w|), with (MSE, kDown) the down rule's bound, and amax / d per lane (the largest
// |w| / d, as division is monotone: any element rounds to a non-zero code iff it is > 1/4).
// h2: null (MSE) or H_j with the off-diagonal doubled, [16][16]. (Outputs are reference
// parameters, not a struct: SVE vectors are sizeless.)
template <bool kHess, bool kDown>
HWY_INLINE void Objective(const float* xt, size_t L, VI code, float s2, const float* h2,
                          VF amax, float* dwbuf, VF& err, VF& down_bound, VF& ytop) {
  const DF df;
  const DI di;
  const VF v = DecodeE4m3(df, code);  // e4m3_to_float(code), exact
  const VF vs2 = hn::Set(df, s2);
  const VF d = hn::Mul(v, vs2);
  const VF six = hn::Set(df, 6.0f), one = hn::Set(df, 1.0f), sign = hn::Set(df, -0.0f);
  const VI exp_mask = hn::Set(di, 0x7F800000), magic = hn::Set(di, (22 << 23) + 0x400000);
  ytop = hn::Div(amax, d);
  err = hn::Zero(df);
  down_bound = hn::Zero(df);
  for (size_t i = 0; i < 16; ++i) {
    const VF w = hn::Load(df, xt + i * L);
    const VF a = kHess ? hn::Abs(w) : w;
    const VF y = hn::Div(a, d);
    const VF am = hn::Min(y, six);
    // E2M1 magnitude of am: the grid step s is 1/2 below 2, else half the power of two below am,
    // so am rounds to a multiple of s, ties to even, by adding and subtracting M = 1.5 * 2^23 * s
    // (M's ulp is s; M / s is even): M has the exponent of max(am, 1) plus 22 and mantissa .5.
    const VF m = hn::BitCast(df, hn::Add(hn::And(hn::BitCast(di, hn::Max(am, one)), exp_mask), magic));
    const VF q = hn::Sub(hn::Add(am, m), m);
    const VF e = hn::Sub(a, hn::Mul(hn::Mul(q, v), vs2));
    if constexpr (kHess) {
      hn::Store(hn::Xor(e, hn::And(w, sign)), df, dwbuf + i * L);
    } else {
      const VF e2 = hn::Mul(e, e);
      err = hn::Add(err, e2);
      if constexpr (kDown) down_bound = hn::Add(down_bound, hn::IfThenElseZero(hn::Gt(y, six), e2));
    }
  }
  if constexpr (kHess) {
    for (size_t i = 0; i < 16; ++i) {
      const VF di_v = hn::Load(df, dwbuf + i * L);
      VF t = hn::Mul(hn::Set(df, h2[i * 16 + i]), di_v);
      for (size_t k = i + 1; k < 16; ++k)
        t = hn::Add(t, hn::Mul(hn::Set(df, h2[i * 16 + k]), hn::Load(df, dwbuf + k * L)));
      err = hn::Add(err, hn::Mul(di_v, t));
    }
  }
}

// Keeps (err, c) in (best_err, best) where the search's tie rule prefers it.
HWY_INLINE void Consider(VI c, VF err, VI base, VF& best_err, VI& best) {
  const DF df;
  const DI di;
  const VI dc = hn::Abs(hn::Sub(c, base)), db = hn::Abs(hn::Sub(best, base));
  const auto tie_wins = hn::Or(hn::Lt(dc, db), hn::And(hn::Eq(dc, db), hn::Lt(c, best)));
  const auto better = hn::Or(hn::RebindMask(di, hn::Lt(err, best_err)),
                             hn::And(hn::RebindMask(di, hn::Eq(err, best_err)), tie_wins));
  best_err = hn::IfThenElse(hn::RebindMask(df, better), err, best_err);
  best = hn::IfThenElse(better, c, best);
}

// Down step k: scores base - k (clamped to code 1), returns its objective and amax / d, and adds
// the lanes that may stop (see the top of the file).
template <bool kHess>
HWY_INLINE void DownStep(const float* xt, size_t L, VI base, VF amax, int32_t k, float s2,
                         const float* h2, float* dwbuf, VF& best_err, VI& best,
                         hn::Mask<DF>& stop, VF& err, VF& ytop) {
  const DF df;
  const DI di;
  const VF margin = hn::Set(df, 1.0f + 0x1p-10f);
  const VI raw = hn::Sub(base, hn::Set(di, k));
  const VI c = hn::Max(raw, hn::Set(di, 1));
  VF down_bound;
  Objective<kHess, !kHess>(xt, L, c, s2, h2, amax, dwbuf, err, down_bound, ytop);
  Consider(c, err, base, best_err, best);
  stop = hn::Or(stop, hn::RebindMask(df, hn::Lt(raw, hn::Set(di, 2))));
  const VI db = hn::Abs(hn::Sub(best, base));
  stop = hn::Or(stop, hn::And(hn::Eq(best_err, hn::Zero(df)),
                              hn::RebindMask(df, hn::Lt(db, hn::Set(di, k + 1)))));
  if constexpr (!kHess) stop = hn::Or(stop, hn::Gt(down_bound, hn::Mul(best_err, margin)));
}

// The up direction's lanes that may stop after scoring code base + k (amax / d = ytop): past the
// range, all-zero, or exact with the best no farther than k.
HWY_INLINE hn::Mask<DF> UpStops(VI base, int32_t k, VF ytop, VF best_err, VI best) {
  const DF df;
  const DI di;
  auto stop = hn::RebindMask(df, hn::Gt(hn::Add(base, hn::Set(di, k)), hn::Set(di, 125)));
  stop = hn::Or(stop, hn::Le(ytop, hn::Set(df, 0.25f)));
  const VI db = hn::Abs(hn::Sub(best, base));
  return hn::Or(stop, hn::And(hn::Eq(best_err, hn::Zero(df)),
                              hn::RebindMask(df, hn::Lt(db, hn::Set(di, k + 1)))));
}

// Hessian objective: walks up until all-zero or exact, down until code 1 or exact.
HWY_INLINE void SearchGroupHessian(const float* xt, size_t L, const int32_t* base_codes,
                                   const float* amax_l, float s2, const float* h2, float* dwbuf,
                                   int32_t* out_codes) {
  const DF df;
  const DI di;
  const VI base = hn::Load(di, base_codes);
  const VF amax = hn::Load(df, amax_l);
  VF best_err, dbound, ytop, err;
  Objective<true, false>(xt, L, base, s2, h2, amax, dwbuf, best_err, dbound, ytop);
  VI best = base;
  auto up_stop = hn::RebindMask(df, hn::Gt(base, hn::Set(di, 125)));
  auto down_stop = hn::RebindMask(df, hn::Lt(base, hn::Set(di, 2)));
  // Both directions advance together (independent work for the out-of-order core).
  for (int32_t k = 1;; ++k) {
    const bool up = !hn::AllTrue(df, up_stop), down = !hn::AllTrue(df, down_stop);
    if (!up && !down) break;
    if (up) {
      const VI c = hn::Min(hn::Add(base, hn::Set(di, k)), hn::Set(di, 126));
      Objective<true, false>(xt, L, c, s2, h2, amax, dwbuf, err, dbound, ytop);
      Consider(c, err, base, best_err, best);
      up_stop = hn::Or(up_stop, UpStops(base, k, ytop, best_err, best));
    }
    if (down)
      DownStep<true>(xt, L, base, amax, k, s2, h2, dwbuf, best_err, best, down_stop, err, ytop);
  }
  hn::Store(best, di, out_codes);
}

// Per residue class of codes modulo 8 (the MSE search's octave rule), per lane: the largest code
// of the class scored so far, its objective and amax / d (NaN: not scored yet, code - 8 is next).
struct ClassState {
  HWY_ALIGN int32_t code[8][16];
  HWY_ALIGN float err[8][16];
  HWY_ALIGN float ytop[8][16];
};

HWY_INLINE void StoreClass(ClassState& cs, size_t k, VI code, VF err, VF ytop) {
  const DF df;
  const DI di;
  hn::Store(code, di, cs.code[k]);
  hn::Store(err, df, cs.err[k]);
  hn::Store(ytop, df, cs.ytop[k]);
}

HWY_INLINE void UpdateClass(ClassState& cs, size_t k, hn::Mask<DI> lanes, VI code, VF err,
                            VF ytop) {
  const DF df;
  const DI di;
  const auto lf = hn::RebindMask(df, lanes);
  hn::Store(hn::IfThenElse(lanes, code, hn::Load(di, cs.code[k])), di, cs.code[k]);
  hn::Store(hn::IfThenElse(lf, err, hn::Load(df, cs.err[k])), df, cs.err[k]);
  hn::Store(hn::IfThenElse(lf, ytop, hn::Load(df, cs.ytop[k])), df, cs.ytop[k]);
}

// Lanes of class k for which no code above its largest scored one can be preferred (top of the
// file): past the range, all-zero, exact, or the octave rule against the best objective B with
// all-zero objective zsum. The margin is computed in float32 with twice the constants of the
// proof, which covers its own rounding (a few u relative). A NaN (not scored) is never done.
HWY_INLINE hn::Mask<DF> ClassDone(const ClassState& cs, size_t k, VI base, VF best_err, VI best,
                                  VF amax, VF zsum, float s2) {
  const DF df;
  const DI di;
  const VI code = hn::Load(di, cs.code[k]);
  const VF err = hn::Load(df, cs.err[k]), ytop = hn::Load(df, cs.ytop[k]);
  const VI next = hn::Add(code, hn::Set(di, 8));
  auto done = hn::RebindMask(df, hn::Gt(next, hn::Set(di, 126)));
  done = hn::Or(done, hn::Le(ytop, hn::Set(df, 0.25f)));  // all-zero
  const VI db = hn::Abs(hn::Sub(best, base));
  done = hn::Or(done, hn::And(hn::Eq(best_err, hn::Zero(df)),
                              hn::RebindMask(df, hn::Gt(hn::Sub(next, base), db))));
  // Octave rule: code normal with d normal, amax < 7 d, all-zero codes lose, E(code) > B + margin.
  const VF d = hn::Mul(DecodeE4m3(df, code), hn::Set(df, s2));
  auto oct = hn::And(hn::RebindMask(df, hn::Gt(code, hn::Set(di, 7))),
                     hn::Ge(d, hn::Set(df, std::numeric_limits<float>::min())));
  oct = hn::And(oct, hn::And(hn::Lt(ytop, hn::Set(df, 7.0f)), hn::Gt(zsum, best_err)));
  const VF margin = hn::Add(
      hn::Add(hn::Mul(best_err, hn::Set(df, 0x1p-15f)),
              hn::Mul(hn::Mul(amax, hn::Set(df, 0x1p-11f)), hn::Sqrt(best_err))),
      hn::Mul(hn::Mul(amax, amax), hn::Set(df, 0x1p-25f)));
  oct = hn::And(oct, hn::Gt(err, hn::Add(best_err, margin)));
  return hn::Or(done, oct);
}

// MSE objective (see the top of the file): the max-based code and the 6 codes above it, the down
// walk beside them (base - 1 represents base + 7's class), then the octave rule per class.
HWY_INLINE void SearchGroupMse(const float* xt, size_t L, const int32_t* base_codes,
                               const float* amax_l, float s2, int32_t* out_codes) {
  const DF df;
  const DI di;
  const VI base = hn::Load(di, base_codes);
  const VF amax = hn::Load(df, amax_l);
  const VF nan = hn::Set(df, std::numeric_limits<float>::quiet_NaN());
  ClassState cs;
  VF best_err, dbound, ytop, err;
  Objective<false, false>(xt, L, base, s2, nullptr, amax, nullptr, best_err, dbound, ytop);
  StoreClass(cs, 0, base, best_err, ytop);
  StoreClass(cs, 7, hn::Sub(base, hn::Set(di, 1)), nan, nan);
  VI best = base;
  auto up_stop = UpStops(base, 0, ytop, best_err, best);
  auto down_stop = hn::RebindMask(df, hn::Lt(base, hn::Set(di, 2)));
  bool up_active = !hn::AllTrue(df, up_stop);
  for (int32_t k = 1;; ++k) {
    const bool up = k < 7 && up_active, down = !hn::AllTrue(df, down_stop);
    if (!up && !down) break;
    if (up) {
      const VI c = hn::Min(hn::Add(base, hn::Set(di, k)), hn::Set(di, 126));
      Objective<false, false>(xt, L, c, s2, nullptr, amax, nullptr, err, dbound, ytop);
      Consider(c, err, base, best_err, best);
      StoreClass(cs, static_cast<size_t>(k), hn::Add(base, hn::Set(di, k)), err, ytop);
      up_stop = hn::Or(up_stop, UpStops(base, k, ytop, best_err, best));
      up_active = !hn::AllTrue(df, up_stop);
    }
    if (down) {
      DownStep<false>(xt, L, base, amax, k, s2, nullptr, nullptr, best_err, best, down_stop, err,
                      ytop);
      if (k == 1) UpdateClass(cs, 7, hn::Gt(base, hn::Set(di, 1)), hn::Sub(base, hn::Set(di, 1)),
                              err, ytop);
    }
  }
  if (up_active) {
    // The objective of an all-zero code (every e = |w|), in the objective's order.
    VF zsum = hn::Zero(df);
    for (size_t i = 0; i < 16; ++i) {
      const VF a = hn::Load(df, xt + i * L);
      zsum = hn::Add(zsum, hn::Mul(a, a));
    }
    // Per lane, score the next code of the first class it cannot drop, until none is left.
    for (;;) {
      VI cand = best, cls = hn::Set(di, -1);
      auto taken = hn::RebindMask(di, up_stop);
      for (size_t k = 0; k < 8; ++k) {
        const auto open = hn::AndNot(
            taken, hn::Not(hn::RebindMask(di, ClassDone(cs, k, base, best_err, best, amax, zsum, s2))));
        cand = hn::IfThenElse(open, hn::Add(hn::Load(di, cs.code[k]), hn::Set(di, 8)), cand);
        cls = hn::IfThenElse(open, hn::Set(di, static_cast<int32_t>(k)), cls);
        taken = hn::Or(taken, open);
      }
      if (hn::AllTrue(di, hn::Lt(cls, hn::Zero(di)))) break;
      Objective<false, false>(xt, L, cand, s2, nullptr, amax, nullptr, err, dbound, ytop);
      Consider(cand, err, base, best_err, best);
      for (size_t k = 0; k < 8; ++k) {
        const auto mine = hn::Eq(cls, hn::Set(di, static_cast<int32_t>(k)));
        if (!hn::AllFalse(di, mine)) UpdateClass(cs, k, mine, cand, err, ytop);
      }
    }
  }
  hn::Store(best, di, out_codes);
}

#undef FP4KIT_SEARCH_TRANSPOSE16
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define FP4KIT_SEARCH_TRANSPOSE16 1
// r[l] = element i of row l -> r[i] = lane l of element i (16 x 16 floats): 64 shuffles.
HWY_INLINE void Transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // lane k of t[2i]: rows 2i, 2i+1, columns 4k, 4k+1 (t[2i+1]: +2)
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // lane k of u[4i + j]: rows 4i..4i+3 of column 4k + j
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), e = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, e));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, e));
  }
  for (int j = 0; j < 4; ++j) {  // column 4k + j: lane k of u[j], u[4 + j], u[8 + j], u[12 + j]
    const __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
    const __m512 v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    r[j] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
    r[8 + j] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
  }
}
#endif

// Block j of rows [0, nr) of a lane group (rows past nr are zero) as xt [16][L]: |w|, or the
// signed weights when `signed_w`; amax per lane. False when the block holds NaN or Inf.
template <class In>
HWY_INLINE bool LoadGroupBlock(const unsigned char* in, size_t row_bytes, size_t nr, size_t j,
                               size_t esize, bool signed_w, float* xt, float* amax) {
  const DF df;
  const DI di;
  const size_t L = hn::Lanes(df);
  const VI abs_mask = hn::Set(di, 0x7FFFFFFF);
#ifdef FP4KIT_SEARCH_TRANSPOSE16
  __m512 r[16];
  for (size_t l = 0; l < 16; ++l)
    r[l] = l < nr ? LoadF32(df, in + l * row_bytes + j * 16 * esize, In()).raw : _mm512_setzero_ps();
  Transpose16(r);
  VI worst = hn::Zero(di);
  for (size_t i = 0; i < 16; ++i) {
    const VF w{r[i]};
    const VI a = hn::And(hn::BitCast(di, w), abs_mask);
    worst = hn::Max(worst, a);
    hn::Store(signed_w ? w : hn::BitCast(df, a), df, xt + i * 16);
  }
  hn::Store(hn::BitCast(df, worst), df, amax);  // |bits| max: exact, NaN/Inf >= 0x7F800000
  return hn::AllTrue(di, hn::Lt(worst, hn::Set(di, 0x7F800000)));
#else
  HWY_ALIGN float blk[16 * 16];
  for (size_t l = 0; l < L; ++l)
    for (size_t i = 0; i < 16; i += L)
      hn::Store(l < nr ? LoadF32(df, in + l * row_bytes + (j * 16 + i) * esize, In()) : hn::Zero(df),
                df, blk + l * 16 + i);
  bool ok = true;
  for (size_t l = 0; l < L; ++l) {
    float m = 0.0f;
    for (size_t i = 0; i < 16; ++i) {
      const float w = blk[l * 16 + i];
      ok = ok && std::isfinite(w);
      xt[i * L + l] = signed_w ? w : std::fabs(w);
      m = std::max(m, std::fabs(w));
    }
    amax[l] = m;
  }
  return ok;
#endif
}

template <class In>
bool SearchRowsT(const unsigned char* in, size_t esize, size_t rows, size_t cols, float s2,
                 const float* hessian, uint8_t* scales) {
  const DF df;
  const DI di;
  const size_t L = hn::Lanes(df);
  const size_t nb = cols / 16;
  HWY_ALIGN float xt[16 * 16];
  HWY_ALIGN float dwbuf[16 * 16];
  HWY_ALIGN int32_t base[16];
  HWY_ALIGN int32_t best[16];
  HWY_ALIGN float amax[16];
  float h2[256];
  const VF den = hn::Set(df, 6.0f * s2);
  for (size_t r0 = 0; r0 < rows; r0 += L) {
    const size_t nr = rows - r0 < L ? rows - r0 : L;
    for (size_t j = 0; j < nb; ++j) {
      const bool hess = hessian && !detail::hessian_block_is_zero(hessian + j * 256);
      if (!LoadGroupBlock<In>(in + r0 * cols * esize, cols * esize, nr, j, esize, hess, xt, amax))
        return false;
      hn::Store(MaxScaleCode(df, hn::Load(df, amax), den), di, base);
      if (hess) {
        const float* h = hessian + j * 256;
        for (size_t i = 0; i < 16; ++i)
          for (size_t k = 0; k < 16; ++k) h2[i * 16 + k] = k == i ? h[i * 16 + k] : 2.0f * h[i * 16 + k];
        SearchGroupHessian(xt, L, base, amax, s2, h2, dwbuf, best);
      } else {
        SearchGroupMse(xt, L, base, amax, s2, best);
      }
      for (size_t l = 0; l < nr; ++l) scales[(r0 + l) * nb + j] = static_cast<uint8_t>(best[l]);
    }
  }
  return true;
}

bool SearchRows(const void* src, int dtype, size_t rows, size_t cols, float s2,
                const float* hessian, uint8_t* scales) {
  const auto* in = static_cast<const unsigned char*>(src);
  switch (static_cast<DType>(dtype)) {
    case DType::BF16: return SearchRowsT<Bf16In>(in, 2, rows, cols, s2, hessian, scales);
    case DType::F16: return SearchRowsT<F16In>(in, 2, rows, cols, s2, hessian, scales);
    default: return SearchRowsT<F32In>(in, 4, rows, cols, s2, hessian, scales);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace fp4kit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace fp4kit {
HWY_EXPORT(SearchRows);

namespace detail {

bool nvfp4_search_simd_supports(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32;
}

bool nvfp4_search_rows_simd(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                            const float* hessian, uint8_t* packed, uint8_t* scales,
                            DistortionStats* stats) {
  if (!HWY_DYNAMIC_DISPATCH(SearchRows)(src, static_cast<int>(dtype), rows, cols, s2, hessian,
                                         scales))
    return false;
  return nvfp4_encode_rows_simd(src, dtype, rows, cols, s2, scales, packed, stats);
}

}  // namespace detail
}  // namespace fp4kit
#endif  // HWY_ONCE
