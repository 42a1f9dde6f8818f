// verify --source for 3-D BMM experts. Each expert is brought to the 2-D orientation the NVFP4
// codec works in ([N, K], blocks of 16 along K) and compared as a 2-D module would be; the
// verdict names the tensor and the expert, because one broken expert among 128 barely moves the
// whole tensor's error.
#include "fp4kit/verify/bmm_numeric.hpp"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "fp4kit/numeric/source_formats.hpp"
#include "fp4kit/verify/numeric_reference.hpp"

namespace fp4kit::verify {
namespace {

std::string shape_str(const std::vector<uint64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// The source of BMM tensor "<m>": a float "<m>" [E, K, N], or the MXFP4 pair.
struct BmmSource {
  const TensorInfo* dense = nullptr;   // "<m>" [E, K, N]
  const TensorInfo* blocks = nullptr;  // "<m>_blocks" U8 [E, N, K/32, 16]
  const TensorInfo* scales = nullptr;  // "<m>_scales" U8 [E, N, K/32]
};

std::optional<BmmSource> find_bmm_source(const Checkpoint& source, const std::string& m,
                                         uint64_t experts, uint64_t k, uint64_t n,
                                         std::string& why) {
  if (source.has(m)) {
    const TensorInfo& t = source.info(m);
    const std::vector<uint64_t> want{experts, k, n};
    if (t.shape != want) {
      why = fmt::format("source {} has shape {}; the output's [E, K/2, N] = [{}, {}, {}] needs "
                        "[E, K, N] = {}", m, shape_str(t.shape), experts, k / 2, n, shape_str(want));
      return std::nullopt;
    }
    if (t.dtype != DType::BF16 && t.dtype != DType::F16 && t.dtype != DType::F32) {
      why = fmt::format("source {} is {} (only BF16/F16/F32 and MXFP4 BMM sources are compared)",
                        m, dtype_name(t.dtype));
      return std::nullopt;
    }
    return BmmSource{&t, nullptr, nullptr};
  }
  const std::string b = m + "_blocks", s = m + "_scales";
  if (source.has(b) && source.has(s)) {
    const TensorInfo& tb = source.info(b);
    const TensorInfo& ts = source.info(s);
    const std::vector<uint64_t> want_b{experts, n, k / 32, 16}, want_s{experts, n, k / 32};
    if (k % 32 != 0 || tb.dtype != DType::U8 || ts.dtype != DType::U8 || tb.shape != want_b ||
        ts.shape != want_s) {
      why = fmt::format("MXFP4 source {} {} {} + {} {} {} does not fit the output's {} (E = {}, "
                        "K = {}, N = {}): expected U8 {} + U8 {}", b, dtype_name(tb.dtype),
                        shape_str(tb.shape), s, dtype_name(ts.dtype), shape_str(ts.shape), m,
                        experts, k, n, shape_str(want_b), shape_str(want_s));
      return std::nullopt;
    }
    return BmmSource{nullptr, &tb, &ts};
  }
  why = fmt::format("the source has neither {} nor {} + {}", m, b, s);
  return std::nullopt;
}

// A tensor whose leading dimension is the expert: expert e's bytes are one contiguous range.
class ExpertSlices {
 public:
  ExpertSlices(const Checkpoint& ckpt, const TensorInfo& t, uint64_t experts)
      : file_(ckpt.file_of(t.name)), t_(t), base_(ckpt.bytes(t.name).data()),
        per_(t.nbytes() / experts), experts_(experts) {}
  const uint8_t* data(uint64_t e) const { return base_ + e * per_; }
  void prefetch(uint64_t e) const {
    if (e < experts_) file_.prefetch(range(e));
  }
  // Hands expert e's pages back, so RSS stays near one expert per tensor (as the 2-D path
  // releases each module).
  void release(uint64_t e) const { file_.release(range(e)); }

 private:
  TensorInfo range(uint64_t e) const {
    TensorInfo r;
    r.name = t_.name;
    r.dtype = t_.dtype;
    r.begin = t_.begin + e * per_;
    r.end = r.begin + per_;
    return r;
  }
  const SafetensorsFile& file_;
  const TensorInfo& t_;
  const uint8_t* base_;
  uint64_t per_, experts_;
};

constexpr uint64_t kTile = 32;

// dst [cols, rows] = transpose of the byte matrix src [rows, cols], tiled so reads and writes
// both stay in cache.
// Deliberately not the quantizer's transpose (quant/bmm_experts.hpp): verify must not share the
// code whose output it checks, or a wrong transpose would pass both ways.
void transpose_bytes(const uint8_t* src, uint64_t rows, uint64_t cols, uint8_t* dst) {
  parallel_for(0, (cols + kTile - 1) / kTile, 1, [&](size_t b, size_t e) {
    for (size_t tc = b; tc < e; ++tc) {
      const uint64_t c0 = tc * kTile, c1 = std::min(cols, c0 + kTile);
      for (uint64_t r0 = 0; r0 < rows; r0 += kTile) {
        const uint64_t r1 = std::min(rows, r0 + kTile);
        for (uint64_t c = c0; c < c1; ++c)
          for (uint64_t r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
      }
    }
  });
}

// dst [n, k] float32 = transpose of the float matrix src [k, n] of `dtype`.
void decode_transposed(const uint8_t* src, DType dtype, uint64_t k, uint64_t n, float* dst) {
  const size_t es = dtype_size(dtype);
  parallel_for(0, (k + kTile - 1) / kTile, 1, [&](size_t b, size_t e) {
    std::vector<float> tile(kTile * n);
    for (size_t tr = b; tr < e; ++tr) {
      const uint64_t r0 = tr * kTile, r1 = std::min(k, r0 + kTile);
      decode_to_f32(src + r0 * n * es, dtype, (r1 - r0) * n, tile.data());
      for (uint64_t c = 0; c < n; ++c)
        for (uint64_t r = r0; r < r1; ++r) dst[c * k + r] = tile[(r - r0) * n + c];
    }
  });
}

struct ExpertVerdict {
  uint64_t expert = 0;
  double rel_rmse = 0, sqnr_db = 0, max_abs_err = 0;
  std::optional<Reference> ref;
};

std::string expert_list(const std::vector<ExpertVerdict>& v) {
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < v.size() && i < 8; ++i) ids.push_back(v[i].expert);
  return fmt::format("{}{}", fmt::join(ids, ", "), v.size() > 8 ? ", ..." : "");
}

}  // namespace

void compare_bmm_module(const Checkpoint& ckpt, const Checkpoint& source, const ModuleTensors& m,
                        const ModuleScales& ms, double max_rel_rmse, Findings& out,
                        VerifyReport& report, std::set<std::string>& covered) {
  const TensorInfo& w = *m.weight;
  if (w.shape.size() != 3 || !m.weight_scale) return;
  const uint64_t experts = w.shape[0], k = 2 * w.shape[1], n = w.shape[2];
  std::string why;
  const auto src = find_bmm_source(source, m.name, experts, k, n, why);
  if (!src) {
    out.warning("numeric.source", m.name, fmt::format("{}: not compared: {}", m.name, why));
    return;
  }
  for (const TensorInfo* t : {src->dense, src->blocks, src->scales})
    if (t) covered.insert(t->name);
  if (!ms.s2_valid || !ms.scales_valid || experts == 0 || k % 16 != 0 || n == 0)
    return;  // reported structurally

  const ExpertSlices packed_out(ckpt, w, experts), scales_out(ckpt, *m.weight_scale, experts);
  std::optional<ExpertSlices> dense, blocks, mx_scales;
  if (src->dense) dense.emplace(source, *src->dense, experts);
  else {
    blocks.emplace(source, *src->blocks, experts);
    mx_scales.emplace(source, *src->scales, experts);
  }
  auto each_slice = [&](auto&& f) {
    f(packed_out);
    f(scales_out);
    for (const auto* s : {&dense, &blocks, &mx_scales})
      if (*s) f(**s);
  };
  each_slice([](const ExpertSlices& s) { s.prefetch(0); });

  const uint64_t bpr = k / 16;  // blocks per row of the [N, K] matrix
  std::vector<float> ref(n * k);  // one expert, [N, K]
  std::vector<uint8_t> packed(n * k / 2), scales(n * bpr);
  DistortionStats total;
  std::vector<ExpertVerdict> broken, hard;
  uint64_t worst_expert = 0, flips_expert = 0, most_flips = 0, bad_zero = 0;
  double worst = -1;
  float amax = 0;
  bool amax_known = true;
  std::string first_zero;
  for (uint64_t e = 0; e < experts; ++e) {
    each_slice([e](const ExpertSlices& s) { s.prefetch(e + 1); });
    if (dense) {
      decode_transposed(dense->data(e), src->dense->dtype, k, n, ref.data());
    } else {
      try {
        mxfp4_dequantize(blocks->data(e), mx_scales->data(e), n * k / kMxfp4Block, ref.data(),
                         src->scales->name);
      } catch (const Error& ex) {
        out.error("numeric.source", m.name, fmt::format("{}: expert {}: {}", m.name, e, ex.what()));
        return;
      }
    }
    transpose_bytes(packed_out.data(e), k / 2, n, packed.data());  // [K/2, N] -> [N, K/2]
    transpose_bytes(scales_out.data(e), bpr, n, scales.data());     // [K/16, N] -> [N, K/16]
    const DistortionStats d =
        nvfp4_distortion(ref.data(), DType::F32, n, k, packed.data(), scales.data(), ms.s2);
    total.merge(d);
    try {
      amax = std::max(amax, tensor_amax(ref.data(), DType::F32, n, k));
    } catch (const Error&) {
      amax_known = false;  // NaN/Inf in the source: no expected s2
    }
    // Zero block scales are only right where the source block is all zero (spec 9.6).
    for (uint64_t i = 0; i < scales.size(); ++i) {
      if (scales[i] != 0) continue;
      float block_amax = 0;
      for (uint64_t j = 0; j < 16; ++j) block_amax = std::max(block_amax, std::fabs(ref[i * 16 + j]));
      if (block_amax != 0 && bad_zero++ == 0)
        first_zero = fmt::format("expert {}, scale [{}, {}] (source block amax {:.6g})", e,
                                 i % bpr, i / bpr, block_amax);
    }
    const double rel = d.rel_rmse();
    if (rel > worst || std::isnan(rel)) {
      worst = std::isnan(rel) ? INFINITY : rel;
      worst_expert = e;
    }
    if (d.sign_flips > most_flips) {
      most_flips = d.sign_flips;
      flips_expert = e;
    }
    if (!(rel <= max_rel_rmse)) {
      ExpertVerdict v{e, rel, d.sqnr_db(), d.max_abs_err,
                      reference_encoding(ref.data(), DType::F32, n, k)};
      (within_reference(rel, v.ref) ? hard : broken).push_back(std::move(v));
    }
    each_slice([e](const ExpertSlices& s) { s.release(e); });
  }

  TensorErrorStats st;
  st.module = m.name;
  st.rows = n;
  st.cols = k;
  st.experts = experts;
  st.worst_expert = static_cast<int64_t>(worst_expert);
  st.worst_rel_rmse = worst;
  st.source_amax = amax_known ? amax : NAN;
  fill_error_stats(total, st);
  const std::string whole = fmt::format("whole tensor {:.4f} over {} experts", st.rel_rmse, experts);
  if (bad_zero)
    out.error("scale.zero", m.name,
              fmt::format("{}: {} block scales are 0 where the source block is not all zero (first "
                          "at {}): those weights dequantize to zero", m.weight_scale->name,
                          bad_zero, first_zero));
  if (!broken.empty()) {
    const auto& v = *std::max_element(broken.begin(), broken.end(),
                                      [](const auto& a, const auto& b) { return a.rel_rmse < b.rel_rmse; });
    std::string hint;
    const float want_s2 = nvfp4_global_scale(amax);
    if (broken.size() == experts && amax_known && std::fabs(ms.s2 / want_s2 - 1) > 0.01)
      hint = fmt::format("; every expert is off and {}_weight_scale_2 = {:.6g}, while the amax "
                         "over all experts ({:.6g}) gives {:.6g}", m.name, ms.s2, amax, want_s2);
    else if (v.ref && v.ref->s2 > 0 && ms.s2 >= 16 * v.ref->s2)
      hint = fmt::format("; the shared global scale {:.4g} is {:.3g}x what this expert's own amax "
                         "needs, so its block scales underflow E4M3", ms.s2, ms.s2 / v.ref->s2);
    out.error("numeric.error", m.name,
              fmt::format("{}: expert {} of {}: relative RMSE {:.4f} (SQNR {:.1f} dB, max abs "
                          "error {:.4g}) against the source; correct NVFP4 rounding stays below "
                          "{:.3f}{}; experts off: {} of {} ({}); {}{}",
                          m.name, v.expert, experts, v.rel_rmse, v.sqnr_db, v.max_abs_err,
                          max_rel_rmse,
                          v.ref ? fmt::format(" and gives {:.4f} for this expert", v.ref->rel_rmse) : "",
                          broken.size(), experts, expert_list(broken), whole, hint));
  } else if (!hard.empty()) {
    const auto& v = hard.front();
    out.warning("numeric.error", m.name,
                fmt::format("{}: expert {} of {}: relative RMSE {:.4f} (SQNR {:.1f} dB) is above "
                            "the threshold {:.3f}, but round-to-nearest NVFP4 of this expert's "
                            "source gives {:.4f}: a hard distribution, not a broken encoding ({} "
                            "such experts: {}; {})", m.name, v.expert, experts, v.rel_rmse,
                            v.sqnr_db, max_rel_rmse, v.ref->rel_rmse, hard.size(),
                            expert_list(hard), whole));
  }
  if (st.sign_flips > 0)
    out.warning("numeric.sign_flips", m.name,
                fmt::format("{}: {} of {} weights changed sign ({:.3g}%), most in expert {} ({}); "
                            "round-to-nearest never flips a sign", m.name, st.sign_flips, st.count,
                            100.0 * st.sign_flips / std::max<uint64_t>(st.count, 1), flips_expert,
                            most_flips));
  report.tensor_errors.push_back(std::move(st));
}

}  // namespace fp4kit::verify
