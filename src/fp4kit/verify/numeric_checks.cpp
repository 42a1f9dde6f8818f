// Numeric comparison with the source checkpoint (issue 5, "--source"). Dequantization is what
// every loader does: w = e2m1(code) * e4m3(scale) * s2 (spec section 2).
#include "fp4kit/verify/numeric_checks.hpp"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "fp4kit/error.hpp"
#include "fp4kit/model/packed_int.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/source_formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/verify/bmm_numeric.hpp"
#include "fp4kit/verify/module_names.hpp"
#include "fp4kit/verify/numeric_reference.hpp"

namespace fp4kit::verify {
namespace {

bool comparable_dtype(DType t) { return t == DType::BF16 || t == DType::F16 || t == DType::F32; }

const uint8_t* slice_ptr(const Checkpoint& src, const SourceSlice& s) {
  return src.bytes(s.tensor->name).data() + s.offset_elems * dtype_size(s.tensor->dtype);
}

// Zero block scales are only right where the source block is all zero (spec 9.6).
// `src` / `dtype`: the source values as compared (decoded for FP8 and packed INT sources).
void check_zero_scales(const void* src, DType dtype, const SourceSlice& s, const ModuleTensors& m,
                       const ModuleScales& ms, Findings& out) {
  if (ms.zero_scales == 0) return;
  const uint64_t blocks_per_row = s.cols / 16;
  const uint8_t* base = static_cast<const uint8_t*>(src);
  const size_t es = dtype_size(dtype);
  uint64_t bad = 0;
  std::string first;
  for (uint64_t pos : ms.zero_positions) {
    const uint64_t r = pos / blocks_per_row, b = pos % blocks_per_row;
    float v[16];
    decode_to_f32(base + (r * s.cols + b * 16) * es, dtype, 16, v);
    float amax = 0;
    for (float x : v) amax = std::max(amax, std::fabs(x));
    if (amax != 0 && bad++ == 0)
      first = fmt::format("row {}, block {} (source block amax {:.6g})", r, b, amax);
  }
  if (bad)
    out.error("scale.zero", m.name,
              fmt::format("{}.weight_scale: {} block scales are 0 where the source block is not all "
                          "zero (first at {}){}: those weights dequantize to zero", m.name, bad, first,
                          ms.zero_scales > ms.zero_positions.size()
                              ? fmt::format(" ({} of {} zero scales checked)", ms.zero_positions.size(),
                                            ms.zero_scales) : ""));
}

// Source tensors the output must carry (unchanged, or quantized as some module).
void check_kept_tensors(const Checkpoint& ckpt, const Checkpoint& source,
                        const std::set<std::string>& covered, Findings& out) {
  for (const auto& name : source.tensor_names()) {
    if (covered.count(name)) continue;
    const auto last = last_of(name);
    if (last == "weight_scale_inv") continue;  // FP8 source scales, absorbed by dequantization
    // compressed-tensors pack-quantized sources: scale and shape absorbed by the decode; the
    // integers of a kept module come out as "<m>.weight" (BF16).
    if ((last == "weight_scale" || last == "weight_shape" || last == "weight_packed") &&
        is_packed_int(source, std::string(parent_of(name))) &&
        (last != "weight_packed" || ckpt.has(std::string(parent_of(name)) + ".weight")))
      continue;
    // MXFP4 "<m>_blocks" / "<m>_scales" (gpt-oss) become the NVFP4 tensor "<m>": covered when the
    // output has it; otherwise they must be in the output as they are (checked below).
    if (const auto base = mxfp4_base_name(name); !base.empty() && ckpt.has(base)) continue;
    if (!ckpt.has(name)) {
      out.error("keep.missing", std::string(parent_of(name)),
                fmt::format("source tensor {} has no counterpart in the output (neither kept nor "
                            "quantized)", name));
      continue;
    }
    const TensorInfo& a = source.info(name);
    const TensorInfo& b = ckpt.info(name);
    if (b.dtype == DType::U8 && a.dtype != DType::U8) continue;  // quantized: compared elsewhere
    if (a.dtype != b.dtype || a.shape != b.shape) {
      out.info("keep.changed", std::string(parent_of(name)),
               fmt::format("{} is {} in the source and {} in the output", name, dtype_name(a.dtype),
                           dtype_name(b.dtype)));
      continue;
    }
    const auto x = source.bytes(name), y = ckpt.bytes(name);
    if (x.size() != y.size() || std::memcmp(x.data(), y.data(), x.size()) != 0)
      out.warning("keep.changed", std::string(parent_of(name)),
                  fmt::format("{} is kept unquantized but its bytes differ from the source", name));
    source.release(name);
    ckpt.release(name);
  }
}

}  // namespace

SourceSlice find_source(const Checkpoint& source, const ModuleTensors& m, std::string& why) {
  const uint64_t rows = m.rows(), cols = m.cols();
  const std::string direct = m.name + ".weight";
  if (is_packed_int(source, m.name)) {  // compressed-tensors pack-quantized: decoded whole
    try {
      const PackedIntWeight p = packed_int_weight(source, m.name);
      if (p.rows == rows && p.cols == cols) return {&source.info(p.packed), 0, rows, cols};
      why = fmt::format("source {} describes [{}, {}], the output's weight is [{}, {}]",
                        p.shape_tensor, p.rows, p.cols, rows, cols);
    } catch (const Error& e) {
      why = e.what();
    }
    return {};
  }
  if (source.has(direct)) {
    const TensorInfo& t = source.info(direct);
    if (t.shape.size() == 2 && t.shape[0] == rows && t.shape[1] == cols)
      return {&t, 0, rows, cols};
    why = fmt::format("source {} has shape [{}], the output's weight is [{}, {}]", direct,
                      fmt::join(t.shape, ", "), rows, cols);
    return {};
  }
  if (const auto e = parse_expert(m.name)) {
    const bool down = e->proj == "down_proj" || e->proj == "w2";
    const bool up = e->proj == "up_proj" || e->proj == "w3";
    const std::string fused = e->moe + (down ? ".down_proj" : ".gate_up_proj");
    if (source.has(fused)) {
      const TensorInfo& t = source.info(fused);
      const auto& s = t.shape;
      const uint64_t ei = static_cast<uint64_t>(e->index);
      if (s.size() == 3 && ei < s[0]) {
        if (!down && s[1] == 2 * rows && s[2] == cols)  // [E, 2I, H], gate rows first
          return {&t, ei * s[1] * s[2] + (up ? rows * cols : 0), rows, cols};
        if (down && s[1] == rows && s[2] == cols)  // [E, H, I]
          return {&t, ei * s[1] * s[2], rows, cols};
      }
      why = fmt::format("fused source {} [{}] does not hold expert {} as a [{}, {}] slice (a BMM "
                        "[E, H, 2I] source is compared only with a 3-D BMM output)", fused,
                        fmt::join(s, ", "), e->index, rows, cols);
      return {};
    }
  }
  why = fmt::format("the source has no {} and no fused expert tensor for it", direct);
  return {};
}

namespace {

// The weight_scale_inv grid beside an FP8 weight "<m>.weight", or nullptr.
const TensorInfo* fp8_scale_of(const Checkpoint& source, const TensorInfo& weight) {
  const std::string& n = weight.name;
  if (!n.ends_with(".weight")) return nullptr;
  const std::string scale = n + "_scale_inv";
  return source.has(scale) ? &source.info(scale) : nullptr;
}

// Decodes a whole FP8 block-scaled weight [n, k] to float32; the block size comes from the source
// config (quantization_config.weight_block_size), 128 x 128 when absent, as the quantizer reads it.
void decode_fp8_source(const Checkpoint& source, const TensorInfo& weight, std::vector<float>& out) {
  const TensorInfo& scale = *fp8_scale_of(source, weight);
  Fp8BlockScales grid;
  grid.data = source.bytes(scale.name).data();
  grid.dtype = scale.dtype;
  if (scale.shape.size() == 2) {
    grid.grid_rows = scale.shape[0];
    grid.grid_cols = scale.shape[1];
  }
  const auto& qc = source.config().value("quantization_config", nlohmann::json::object());
  if (qc.is_object() && qc.contains("weight_block_size") && qc["weight_block_size"].is_array() &&
      qc["weight_block_size"].size() == 2) {
    grid.block_rows = qc["weight_block_size"][0].get<size_t>();
    grid.block_cols = qc["weight_block_size"][1].get<size_t>();
  }
  const size_t n = weight.shape[0], k = weight.shape[1];
  out.resize(n * k);
  fp8_block_dequantize(source.bytes(weight.name).data(), 0, n, n, k, grid, out.data(), weight.name);
}

}  // namespace

void run_numeric_checks(const Checkpoint& ckpt, const Checkpoint& source,
                        const std::vector<ModuleTensors>& mods,
                        const std::vector<ModuleScales>& scales, double max_rel_rmse,
                        Findings& out, VerifyReport& report) {
  std::set<std::string> covered;  // source tensors some quantized module came from
  // Sources found up front, so their pages can be read ahead (~64 MiB) while earlier modules are
  // compared: without it every page fault waits for the disk.
  std::vector<SourceSlice> slices(mods.size());
  std::vector<std::string> whys(mods.size());
  for (size_t i = 0; i < mods.size(); ++i)
    if (mods[i].quantized && mods[i].weight && mods[i].weight->shape.size() == 2)
      slices[i] = find_source(source, mods[i], whys[i]);
  std::set<const TensorInfo*> prefetched;
  std::vector<float> fp8_decoded;  // one FP8 / packed INT source tensor's float32 values, reused
  size_t ahead = 0;
  auto read_ahead = [&](size_t i) {
    uint64_t window = 0;
    for (ahead = std::max(ahead, i); ahead < mods.size() && window < (64ull << 20); ++ahead) {
      const SourceSlice& s = slices[ahead];
      if (!s.tensor) continue;
      if (prefetched.insert(s.tensor).second) {
        source.file_of(s.tensor->name).prefetch(*s.tensor);
        window += s.tensor->nbytes();
      }
      ckpt.file_of(mods[ahead].weight->name).prefetch(*mods[ahead].weight);
      window += mods[ahead].weight->nbytes();
    }
  };
  for (size_t i = 0; i < mods.size(); ++i) {
    const ModuleTensors& m = mods[i];
    const ModuleScales& ms = scales[i];
    if (ms.bmm) {  // ModelOpt's 3-D expert layout (gpt-oss, Llama-4): compared expert by expert
      compare_bmm_module(ckpt, source, m, ms, max_rel_rmse, out, report, covered);
      continue;
    }
    if (!m.quantized || !m.weight || m.weight->shape.size() != 2) continue;
    if (i + 1 >= ahead) read_ahead(i);
    const std::string& why = whys[i];
    const SourceSlice& s = slices[i];
    if (!s.tensor) {
      out.warning("numeric.source", m.name, fmt::format("{}: not compared: {}", m.name, why));
      continue;
    }
    covered.insert(s.tensor->name);
    // FP8 block-scaled sources (DeepSeek-V3, Qwen3-FP8) are decoded as the quantizer decoded them.
    const bool fp8 = s.tensor->dtype == DType::F8_E4M3 && fp8_scale_of(source, *s.tensor) &&
                     s.tensor->shape.size() == 2;
    const bool packed_int = s.tensor->dtype == DType::I32 && is_packed_int(source, m.name);
    if (!comparable_dtype(s.tensor->dtype) && !fp8 && !packed_int) {
      out.warning("numeric.source", m.name,
                  fmt::format("{}: not compared: source {} is {} (only BF16/F16/F32, FP8 "
                              "block-scaled and pack-quantized INT sources are compared)",
                              m.name, s.tensor->name, dtype_name(s.tensor->dtype)));
      continue;
    }
    if (!ms.s2_valid || !ms.scales_valid || s.cols % 16 != 0) continue;  // reported structurally
    const void* src = slice_ptr(source, s);
    DType src_dtype = s.tensor->dtype;
    if (fp8) {
      try {
        decode_fp8_source(source, *s.tensor, fp8_decoded);
      } catch (const Error& e) {
        out.error("numeric.source", m.name, fmt::format("{}: {}", m.name, e.what()));
        continue;
      }
      src = fp8_decoded.data();
      src_dtype = DType::F32;
    } else if (packed_int) {
      try {
        const PackedIntWeight p = packed_int_weight(source, m.name);
        fp8_decoded.resize(p.rows * p.cols);
        decode_packed_int(source, p, 0, p.rows, fp8_decoded.data());
      } catch (const Error& e) {
        out.error("numeric.source", m.name, fmt::format("{}: {}", m.name, e.what()));
        continue;
      }
      src = fp8_decoded.data();
      src_dtype = DType::F32;
    }
    const uint8_t* packed = ckpt.bytes(m.weight->name).data();
    const uint8_t* sc = ckpt.bytes(m.weight_scale->name).data();
    const DistortionStats d = nvfp4_distortion(src, src_dtype, s.rows, s.cols, packed, sc, ms.s2);
    TensorErrorStats st;
    st.module = m.name;
    st.rows = s.rows;
    st.cols = s.cols;
    fill_error_stats(d, st);
    check_zero_scales(src, src_dtype, s, m, ms, out);
    if (!(st.rel_rmse <= max_rel_rmse)) {
      const auto ref = reference_encoding(src, src_dtype, s.rows, s.cols);
      if (within_reference(st.rel_rmse, ref))
        out.warning("numeric.error", m.name,
                    fmt::format("{}: relative RMSE {:.4f} (SQNR {:.1f} dB) is above the threshold "
                                "{:.3f}, but round-to-nearest NVFP4 of this source tensor gives "
                                "{:.4f}: a hard distribution, not a broken encoding", m.name,
                                st.rel_rmse, st.sqnr_db, max_rel_rmse, ref->rel_rmse));
      else
        out.error("numeric.error", m.name,
                  fmt::format("{}: relative RMSE {:.4f} (SQNR {:.1f} dB, max abs error {:.4g}) "
                              "against the source; correct NVFP4 rounding stays below {:.3f}{}{}",
                              m.name, st.rel_rmse, st.sqnr_db, st.max_abs_err, max_rel_rmse,
                              ref ? fmt::format(" and gives {:.4f} for this tensor", ref->rel_rmse) : "",
                              shared_scale_hint(ms.s2, ref)));
    }
    if (st.sign_flips > 0)
      out.warning("numeric.sign_flips", m.name,
                  fmt::format("{}: {} of {} weights changed sign ({:.3g}%); round-to-nearest never "
                              "flips a sign (error-compensating quantizers such as GPTQ may)",
                              m.name, st.sign_flips, st.count, 100.0 * st.sign_flips / std::max<uint64_t>(st.count, 1)));
    report.tensor_errors.push_back(std::move(st));
    ckpt.release(m.weight->name);
    ckpt.release(m.weight_scale->name);
    source.release(s.tensor->name);
  }
  check_kept_tensors(ckpt, source, covered, out);
}

}  // namespace fp4kit::verify
