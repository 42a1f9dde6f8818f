// SIMD block-scale search (nvfp4_search.hpp), with exactly the result of the scalar reference.
// Compiled once per instruction set by Highway's foreach_target, with -ffp-contract=off.
//
// Lanes are rows: a lane group is up to 16 consecutive rows, and one column block j at a time, so
// a block's Hessian H_j is the same for every lane (broadcast). Each lane walks the E4M3 codes
// outward from its own max-based code (base+1, base+2, ... then base-1, base-2, ...) and stops a
// direction when no code further out can be preferred:
//   up:   the elements with |w|/d <= 1/4 round to 0 for every larger scale too, so the sum of their
//         w^2 (taken in the objective's order) is a lower bound of every larger code's MSE; when
//         every element rounds to 0 all larger codes tie and lose on distance;
//   down: elements with |w|/d > 6 saturate for every smaller scale too, with a larger error, so
//         their sum bounds every smaller code's MSE (checked with a 2^-10 margin for the rounding
//         of d and 6 d);
//   an objective of 0 can only be tied, and ties go to the closer code.
// The Hessian objective has no such bound: its down direction walks to code 1.
// Every code it does not evaluate is strictly worse than one it did, so the argmin (with the tie
// rule) is the reference's.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "fp4kit/numeric/nvfp4_search_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/dtype.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_search.hpp"
#include "fp4kit/numeric/nvfp4_search_simd.hpp"
#include "fp4kit/numeric/nvfp4_simd.hpp"

HWY_BEFORE_NAMESPACE();
namespace fp4kit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::CappedTag<float, 16>;
using DI = hn::RebindToSigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// Objective of scale codes `code` (one per lane) for the lane group xt [16][L] (signed weights),
// with (MSE only) the lower bounds of the up and down directions (see the top of the file) and
// whether any element rounds to a non-zero code. h2: null (MSE) or H_j with the off-diagonal
// doubled, [16][16]. (Outputs are reference parameters, not a struct: SVE vectors are sizeless.)
// kBounds: 0 none, 1 the up bound, 2 the down bound.
template <bool kHess, int kBounds>
HWY_INLINE void Objective(const float* xt, size_t L, VI code, float s2, const float* h2,
                          float* dwbuf, VF& err, VF& up_bound, VF& down_bound,
                          hn::Mask<DF>& any_nonzero) {
  const DF df;
  const DI di;
  const auto code_is_sub = hn::RebindMask(df, hn::Lt(code, hn::Set(di, 8)));
  const auto dec_normal = hn::BitCast(df, hn::ShiftLeft<20>(hn::Add(code, hn::Set(di, 960))));
  const auto dec_sub = hn::Mul(hn::ConvertTo(df, code), hn::Set(df, 0x1p-9f));
  const VF v = hn::IfThenElse(code_is_sub, dec_sub, dec_normal);  // e4m3_to_float(code), exact
  const VF vs2 = hn::Set(df, s2);
  const VF d = hn::Mul(v, vs2);
  const VF half_d = hn::Mul(d, hn::Set(df, 0.5f));
  const VF six = hn::Set(df, 6.0f), one = hn::Set(df, 1.0f), quarter = hn::Set(df, 0.25f);
  const VF two22 = hn::Set(df, 4194304.0f), sign = hn::Set(df, -0.0f);
  const VI round = hn::Set(di, 0x1FFFFF), keep = hn::Set(di, static_cast<int32_t>(0xFFC00000u));
  const VI one_i = hn::Set(di, 1);
  err = hn::Zero(df);
  up_bound = hn::Zero(df);
  down_bound = hn::Zero(df);
  any_nonzero = hn::FirstN(df, 0);
  for (size_t i = 0; i < 16; ++i) {
    const VF w = hn::Load(df, xt + i * L);
    const VF a = hn::Abs(w);
    const VF y = hn::Div(a, d);
    const VF am = hn::Min(y, six);
    // E2M1 magnitude of am: >= 1 rounds to one mantissa bit (ties to even, carry into the
    // exponent); < 1 rounds to halves ((am + 2^22) - 2^22, whose ulp is 0.5).
    const VI bits = hn::BitCast(di, am);
    const VI odd = hn::And(hn::ShiftRight<22>(bits), one_i);
    const VF qn = hn::BitCast(df, hn::And(hn::Add(bits, hn::Add(round, odd)), keep));
    const VF qh = hn::Sub(hn::Add(hn::Min(am, one), two22), two22);
    const VF q = hn::IfThenElse(hn::Ge(am, one), qn, qh);
    const VF e = hn::Sub(a, hn::Mul(hn::Mul(q, v), vs2));
    any_nonzero = hn::Or(any_nonzero, hn::Gt(y, quarter));
    if constexpr (kHess) {
      hn::Store(hn::Xor(e, hn::And(w, sign)), df, dwbuf + i * L);
    } else {
      const VF e2 = hn::Mul(e, e);
      err = hn::Add(err, e2);
      // Grid points of every scale S' >= S are 0 and [S/2, inf): an element below S/2 stays at
      // least min(a, S/2 - a) away from them.
      if constexpr (kBounds == 1) {
        const VF gap = hn::Min(a, hn::Max(hn::Sub(half_d, a), hn::Zero(df)));
        up_bound = hn::Add(up_bound, hn::Mul(gap, gap));
      }
      if constexpr (kBounds == 2)
        down_bound = hn::Add(down_bound, hn::IfThenElseZero(hn::Gt(y, six), e2));
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

// One step k outward: candidate base + k (up) or base - k (down), and the lanes that may stop.
template <bool kHess>
HWY_INLINE void Step(const float* xt, size_t L, VI base, int32_t k, bool up, float s2,
                     const float* h2, float* dwbuf, VF& best_err, VI& best,
                     hn::Mask<DF>& stop) {
  const DF df;
  const DI di;
  const VF margin = hn::Set(df, 1.0f + 0x1p-10f);
  const VI raw = up ? hn::Add(base, hn::Set(di, k)) : hn::Sub(base, hn::Set(di, k));
  // Lanes past the code range are stopped; their clamped candidate is a harmless repeat.
  const VI c = hn::Min(hn::Max(raw, hn::Set(di, 1)), hn::Set(di, 126));
  VF err, up_bound, down_bound;
  hn::Mask<DF> nonzero;
  if (up)
    Objective<kHess, 1>(xt, L, c, s2, h2, dwbuf, err, up_bound, down_bound, nonzero);
  else
    Objective<kHess, 2>(xt, L, c, s2, h2, dwbuf, err, up_bound, down_bound, nonzero);
  Consider(c, err, base, best_err, best);
  const VF zero = hn::Zero(df);
  if (up) {
    stop = hn::Or(stop, hn::RebindMask(df, hn::Gt(raw, hn::Set(di, 125))));
    // Every element rounds to 0: all larger codes tie with this one and lose on distance.
    stop = hn::Or(stop, hn::Not(nonzero));
    stop = hn::Or(stop, hn::Eq(best_err, zero));
    if constexpr (!kHess) stop = hn::Or(stop, hn::Gt(up_bound, hn::Mul(best_err, margin)));
  } else {
    stop = hn::Or(stop, hn::RebindMask(df, hn::Lt(raw, hn::Set(di, 2))));
    const VI db = hn::Abs(hn::Sub(best, base));
    stop = hn::Or(stop, hn::And(hn::Eq(best_err, zero),
                                hn::RebindMask(df, hn::Lt(db, hn::Set(di, k + 1)))));
    if constexpr (!kHess) stop = hn::Or(stop, hn::Gt(down_bound, hn::Mul(best_err, margin)));
  }
}

template <bool kHess>
HWY_INLINE void SearchGroup(const float* xt, size_t L, const int32_t* base_codes, float s2,
                            const float* h2, float* dwbuf, int32_t* out_codes) {
  const DF df;
  const DI di;
  const VI base = hn::Load(di, base_codes);
  VF best_err, ub, db;
  hn::Mask<DF> nz;
  Objective<kHess, 0>(xt, L, base, s2, h2, dwbuf, best_err, ub, db, nz);
  VI best = base;
  // Both directions advance together (independent work for the out-of-order core).
  auto up_stop = hn::RebindMask(df, hn::Gt(base, hn::Set(di, 125)));
  auto down_stop = hn::RebindMask(df, hn::Lt(base, hn::Set(di, 2)));
  for (int32_t k = 1;; ++k) {
    const bool up = !hn::AllTrue(df, up_stop), down = !hn::AllTrue(df, down_stop);
    if (!up && !down) break;
    if (up) Step<kHess>(xt, L, base, k, true, s2, h2, dwbuf, best_err, best, up_stop);
    if (down) Step<kHess>(xt, L, base, k, false, s2, h2, dwbuf, best_err, best, down_stop);
  }
  hn::Store(best, di, out_codes);
}

bool SearchRows(const void* src, int dtype_i, size_t rows, size_t cols, float s2,
                const float* hessian, uint8_t* scales) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const DType dtype = static_cast<DType>(dtype_i);
  const size_t esize = dtype_size(dtype);
  const size_t nb = cols / 16;
  std::vector<float> rowbuf(L * cols);
  HWY_ALIGN float xt[16 * 16];
  HWY_ALIGN float dwbuf[16 * 16];
  HWY_ALIGN int32_t base[16];
  HWY_ALIGN int32_t best[16];
  float h2[256];
  const auto* in = static_cast<const unsigned char*>(src);
  for (size_t r0 = 0; r0 < rows; r0 += L) {
    const size_t nr = rows - r0 < L ? rows - r0 : L;
    for (size_t l = 0; l < nr; ++l) {
      float* row = rowbuf.data() + l * cols;
      decode_to_f32(in + (r0 + l) * cols * esize, dtype, cols, row);
      for (size_t c = 0; c < cols; ++c)
        if (!std::isfinite(row[c])) return false;
    }
    for (size_t l = nr; l < L; ++l) std::memset(rowbuf.data() + l * cols, 0, cols * sizeof(float));
    for (size_t j = 0; j < nb; ++j) {
      for (size_t l = 0; l < L; ++l) {
        const float* x = rowbuf.data() + l * cols + j * 16;
        float bamax = 0.0f;
        for (size_t i = 0; i < 16; ++i) {
          xt[i * L + l] = x[i];
          bamax = std::max(bamax, std::fabs(x[i]));
        }
        base[l] = nvfp4_max_scale_code(bamax, s2);
      }
      if (hessian && !detail::hessian_block_is_zero(hessian + j * 256)) {
        const float* h = hessian + j * 256;
        for (size_t i = 0; i < 16; ++i)
          for (size_t k = 0; k < 16; ++k) h2[i * 16 + k] = k == i ? h[i * 16 + k] : 2.0f * h[i * 16 + k];
        SearchGroup<true>(xt, L, base, s2, h2, dwbuf, best);
      } else {
        SearchGroup<false>(xt, L, base, s2, nullptr, dwbuf, best);
      }
      for (size_t l = 0; l < nr; ++l) scales[(r0 + l) * nb + j] = static_cast<uint8_t>(best[l]);
    }
  }
  return true;
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
                            const float* hessian, uint8_t* packed, uint8_t* scales) {
  if (!HWY_DYNAMIC_DISPATCH(SearchRows)(src, static_cast<int>(dtype), rows, cols, s2, hessian,
                                         scales))
    return false;
  return nvfp4_encode_rows_simd(src, dtype, rows, cols, s2, scales, packed);
}

}  // namespace detail
}  // namespace fp4kit
#endif  // HWY_ONCE
