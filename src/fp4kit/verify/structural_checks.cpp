// Structural rules. Each finding names its module and a check id from check_catalog(); the
// comments cite the spec section or the loader behaviour that makes the rule necessary.
#include "fp4kit/verify/structural_checks.hpp"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::verify {
namespace {

std::string shape_str(const std::vector<uint64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

std::optional<float> read_scalar(const Checkpoint& ckpt, const TensorInfo& t) {
  if (t.numel() != 1 || !dtype_is_float(t.dtype)) return std::nullopt;
  const auto b = ckpt.bytes(t.name);
  if (b.size() < dtype_size(t.dtype)) return std::nullopt;
  float v = 0;
  decode_to_f32(b.data(), t.dtype, 1, &v);
  return v;
}

bool is_float_weight(const TensorInfo* w) {
  return w && w->dtype != DType::U8 && dtype_is_float(w->dtype);
}

// Roles whose weight is a linear layer a loader builds (quantizable unless excluded).
bool is_linear_role(Role r) {
  return is_default_quantized_role(r) || r == Role::Router || r == Role::LmHead ||
         r == Role::OtherLinear || r == Role::LinearAttn || r == Role::SharedExpertGate;
}

struct Ctx {
  const Checkpoint& ckpt;
  const DeclaredQuant& d;
  const std::vector<ModuleTensors>& mods;
  Findings& out;
  VerifyReport& report;
  bool ct() const { return d.format == QuantFormat::CompressedTensors; }
  const char* global_name() const { return ct() ? "weight_global_scale" : "weight_scale_2"; }
  const char* input_name() const { return ct() ? "input_global_scale" : "input_scale"; }
  std::string exclusion(int i) const {
    return fmt::format("'{}' ({})", d.exclusions.patterns()[static_cast<size_t>(i)],
                       d.exclusions_origin);
  }
};

// A finite, positive per-tensor scale that no real model has (see plausible_scale).
std::string implausible_scale_text(const std::string& tensor, double v, bool reciprocal,
                                   bool weight) {
  const double s = reciprocal ? 1.0 / v : v;
  return fmt::format("{} = {:.6g}: implausible, it stands for {} of max |{}| = 6 x 448 x {:.6g} = "
                     "{:.4g}, outside [{:g}, {:g}] ({})",
                     tensor, v, weight ? "weights" : "activations", weight ? "w" : "x", s,
                     s * 2688.0, kMinPlausibleAmax, kMaxPlausibleAmax,
                     weight ? "the weights decode to huge values or Inf, or to nothing"
                            : "every activation rounds to zero, or overflows");
}

// One per-tensor scalar (weight_scale_2 / input_scale or their CT reciprocals): F32, shape []
// (ModelOpt) or [1] (compressed-tensors); other single-element shapes load but are unusual.
void check_scalar_tensor(const Ctx& c, const ModuleTensors& m, const TensorInfo& t) {
  if (t.dtype != DType::F32)
    c.out.error("tensor.dtype", m.name, fmt::format("{} is {}, expected F32", t.name, dtype_name(t.dtype)));
  const std::vector<uint64_t> want = c.ct() ? std::vector<uint64_t>{1} : std::vector<uint64_t>{};
  if (t.numel() != 1)
    c.out.error("tensor.shape", m.name, fmt::format("{} has shape {}, expected {} (one value per "
                                                    "tensor)", t.name, shape_str(t.shape), shape_str(want)));
  else if (t.shape != want)
    c.out.warning("tensor.shape", m.name, fmt::format("{} has shape {}, {} writes {}", t.name,
                                                      shape_str(t.shape), c.ct() ? "compressed-tensors" : "ModelOpt",
                                                      shape_str(want)));
}

// ModelOpt's 3-D BMM experts (gpt-oss, Llama-4; spec section 4): "<x>" U8 [E, K/2, N] with
// blocks along K (H for gate_up_proj), "<x>_weight_scale" F8_E4M3 [E, K/16, N], ONE
// "<x>_weight_scale_2" and ONE "<x>_input_scale" for all experts (s2 from the amax over all
// experts). vLLM loads this layout only for those model families.
void check_bmm_tensors(const Ctx& c, const ModuleTensors& m, ModuleScales& ms) {
  const TensorInfo& w = *m.weight;
  const uint64_t experts = w.shape[0], k = 2 * w.shape[1];
  ms.bmm = true;
  c.out.info("tensor.shape", m.name,
             fmt::format("{} {} is ModelOpt's 3-D BMM expert layout (blocks along dim 1); "
                         "loaders accept it only for gpt-oss / Llama-4", w.name, shape_str(w.shape)));
  if (k % 16 != 0)
    c.out.error("shape.k16", m.name, fmt::format("{}: the blocked dimension {} is not a multiple "
                                                 "of 16", w.name, k));
  const TensorInfo& s = *m.weight_scale;
  const std::vector<uint64_t> want{experts, k / 16, w.shape[2]};
  if (s.dtype != DType::F8_E4M3)
    c.out.error("tensor.dtype", m.name, fmt::format("{} is {}, expected F8_E4M3", s.name,
                                                    dtype_name(s.dtype)));
  if (s.shape != want)
    c.out.error("tensor.shape", m.name, fmt::format("{} has shape {}, expected {}", s.name,
                                                    shape_str(s.shape), shape_str(want)));
  ms.scales_valid = (s.dtype == DType::F8_E4M3 || s.dtype == DType::U8) && s.shape == want &&
                    k % 16 == 0;
  for (const TensorInfo* t : {m.global_scale, m.input_scale}) {
    if (!t) continue;
    const bool global = t == m.global_scale;
    if (t->numel() == experts && experts > 1) {
      // One value per expert: the per-expert habit of 2-D experts carried over. ModelOpt and
      // vLLM's gpt-oss / Llama-4 loaders have one scalar for the whole 3-D tensor.
      c.out.error("tensor.shape", m.name,
                  fmt::format("{} has shape {}, one value per expert: the BMM layout has ONE {} "
                              "for all {} experts (spec section 4), a scalar []", t->name,
                              shape_str(t->shape), global ? "weight_scale_2" : "input_scale",
                              experts));
      continue;
    }
    check_scalar_tensor(c, m, *t);
    const auto v = read_scalar(c.ckpt, *t);
    if (!v || !std::isfinite(*v) || *v <= 0) {
      c.out.error(global ? "scale.global" : "input_scale.value", m.name,
                  fmt::format("{} = {}: must be finite and > 0", t->name,
                              v ? fmt::format("{}", *v) : "unreadable"));
    } else if (!plausible_scale(c.ct() ? 1.0 / *v : *v)) {
      c.out.error(global ? "scale.global" : "input_scale.value", m.name,
                  implausible_scale_text(t->name, *v, c.ct(), global));
    } else if (global) {
      ms.s2 = *v;
      ms.s2_valid = true;
    }
  }
  if (!m.global_scale)
    c.out.error("tensor.missing", m.name,
                fmt::format("{}_weight_scale_2 is missing (one F32 scalar for all experts)", m.name));
  if (!c.d.weights_only && !m.input_scale)
    c.out.error("input_scale.missing", m.name,
                fmt::format("{}_input_scale is missing in a W4A4 checkpoint", m.name));
  else if (c.d.weights_only && m.input_scale)
    c.out.warning("input_scale.unexpected", m.name,
                  fmt::format("{} is present but the config declares weight-only {} (no "
                              "activation quantization)", m.input_scale->name, c.d.quant_algo));
}

// gpt-oss ships its experts as MXFP4 ("<m>_blocks" E2M1 codes + "<m>_scales" E8M0 per 32). Such a
// pair left in a checkpoint that declares NVFP4 is read by no NVFP4 loader path: vLLM either
// rejects the unknown keys or, where the names match, reads MXFP4 codes under an NVFP4 label.
void check_mxfp4_leftovers(const Ctx& c, const ModuleTensors& m) {
  if (!m.mxfp4 || !m.name.ends_with("_blocks")) return;
  const std::string base = mxfp4_base_name(m.name);
  c.out.error("tensor.mxfp4", base,
              fmt::format("{} {} and {}_scales are MXFP4 (E2M1 codes, E8M0 scales per 32) but the "
                          "config declares {}: a loader would read MXFP4 codes as NVFP4; "
                          "quantize them to NVFP4 \"{}\" (+ _weight_scale, _weight_scale_2){}",
                          m.name, shape_str(m.weight->shape), base, c.d.quant_algo, base,
                          c.ckpt.has(base) ? fmt::format(" and drop them: {} is already there", base)
                                           : ""));
}

void check_quantized_tensors(const Ctx& c, const ModuleTensors& m, ModuleScales& ms) {
  const TensorInfo& w = *m.weight;
  if (w.shape.size() == 3 && m.weight_scale && !c.ct() &&
      m.weight_scale->name == m.name + "_weight_scale") {
    check_bmm_tensors(c, m, ms);
    return;
  }
  if (w.shape.size() != 2) {
    c.out.error("tensor.shape", m.name,
                fmt::format("{} is a {}-D packed tensor {}: loaders need per-module 2-D NVFP4 "
                            "weights (quantized fused/3-D expert keys are dropped or crash, vLLM "
                            "#49638)", w.name, w.shape.size(), shape_str(w.shape)));
    return;
  }
  const uint64_t n = w.shape[0], k = 2 * w.shape[1];
  if (k % 16 != 0)
    c.out.error("shape.k16", m.name,
                fmt::format("K = {} (packed {} of {} bytes per row) is not a multiple of 16: NVFP4 "
                            "blocks are 16 elements along K", k, w.name, w.shape[1]));
  // The packed weight and its block scales (spec 5/6).
  if (!m.weight_scale) {
    c.out.error("tensor.missing", m.name, fmt::format("{}.weight_scale is missing", m.name));
  } else {
    const TensorInfo& s = *m.weight_scale;
    if (s.dtype != DType::F8_E4M3)
      c.out.error("tensor.dtype", m.name,
                  fmt::format("{} is {}, expected F8_E4M3{}", s.name, dtype_name(s.dtype),
                              s.dtype == DType::U8 ? " (vLLM copies a U8 tensor into its fp8 "
                                                     "parameter by value, not by bits)" : ""));
    const std::vector<uint64_t> want{n, k / 16};
    if (s.shape != want)
      c.out.error("tensor.shape", m.name, fmt::format("{} has shape {}, expected {} for weight {}",
                                                      s.name, shape_str(s.shape), shape_str(want),
                                                      shape_str(w.shape)));
    ms.scales_valid = (s.dtype == DType::F8_E4M3 || s.dtype == DType::U8) && s.shape == want &&
                      k % 16 == 0;
  }
  if (!m.global_scale) {
    c.out.error("tensor.missing", m.name, fmt::format("{}.{} is missing (the loader keeps an "
                                                      "uninitialised value)", m.name, c.global_name()));
  } else {
    check_scalar_tensor(c, m, *m.global_scale);
    const auto v = read_scalar(c.ckpt, *m.global_scale);
    if (!v || !std::isfinite(*v) || *v <= 0) {
      c.out.error("scale.global", m.name,
                  fmt::format("{} = {}: must be finite and > 0", m.global_scale->name,
                              v ? fmt::format("{}", *v) : "unreadable"));
    } else if (!plausible_scale(c.ct() ? 1.0 / *v : *v)) {
      c.out.error("scale.global", m.name,
                  implausible_scale_text(m.global_scale->name, *v, c.ct(), true));
    } else {
      ms.s2 = c.ct() ? 1.0f / *v : *v;
      ms.s2_valid = std::isfinite(ms.s2) && ms.s2 > 0;
    }
  }
  // Activation scales (spec 9.4): one per quantized linear in W4A4, none in weight-only.
  if (!c.d.weights_only) {
    if (!m.input_scale) {
      c.out.error("input_scale.missing", m.name,
                  fmt::format("{}.{} is missing in a W4A4 checkpoint: vLLM leaves the parameter "
                              "uninitialised (garbage or NaN on Blackwell)", m.name, c.input_name()));
    } else {
      check_scalar_tensor(c, m, *m.input_scale);
      const auto v = read_scalar(c.ckpt, *m.input_scale);
      if (!v || !std::isfinite(*v) || *v <= 0)
        c.out.error("input_scale.value", m.name,
                    fmt::format("{} = {}: must be finite and > 0", m.input_scale->name,
                                v ? fmt::format("{}", *v) : "unreadable"));
      else if (!plausible_scale(c.ct() ? 1.0 / *v : *v))
        c.out.error("input_scale.value", m.name,
                    implausible_scale_text(m.input_scale->name, *v, c.ct(), false));
    }
  } else if (m.input_scale) {
    const std::string msg =
        fmt::format("{} is present but the config declares weight-only {} (no activation "
                    "quantization)", m.input_scale->name, c.d.quant_algo);
    // compressed-tensors NVFP4A16 layers have no such parameter; ModelOpt W4A16 discards it.
    if (c.ct()) c.out.error("input_scale.unexpected", m.name, msg);
    else c.out.warning("input_scale.unexpected", m.name, msg);
  }
  if (m.unpacked_weight)
    c.out.error("tensor.naming", m.name,
                fmt::format("{} exists next to {}: a module is either packed or not",
                            m.unpacked_weight->name, w.name));
}

void check_foreign(const Ctx& c, const ModuleTensors& m) {
  for (const TensorInfo* t : m.foreign)
    c.out.error("tensor.naming", m.name,
                fmt::format("{} is named as in the {} format but the config declares {}", t->name,
                            c.ct() ? "ModelOpt" : "compressed-tensors", format_name(c.d.format)));
}

// Module-level rules: seed bug, exclusions, roles, stray scales (spec 9.1, 9.5, 9.8).
void check_module(const Ctx& c, const ModuleTensors& m) {
  const bool excluded = m.exclude_pattern >= 0;
  if (m.quantized) {
    if (excluded)
      c.out.error("exclude.quantized", m.name,
                  fmt::format("{} is NVFP4 but excluded by {}: loaders build it unquantized and "
                              "fail on the packed shape or read garbage", m.name,
                              c.exclusion(m.exclude_pattern)));
    else if (const int s = c.d.exclusions.substring_only(m.name); s >= 0)
      c.out.warning("exclude.substring", m.name,
                    fmt::format("{} is NVFP4 and the exclusion '{}' is a substring of its name: "
                                "vLLM's legacy substring rule excludes it (fused names such as "
                                "gate_up_proj contain the pattern)", m.name,
                                c.d.exclusions.patterns()[static_cast<size_t>(s)]));
    if (is_never_quantized_role(m.role))
      c.out.error("role.quantized", m.name,
                  fmt::format("{} is a {} and must stay unquantized (spec section 7){}", m.name,
                              role_name(m.role),
                              m.role == Role::Vision ? ": vLLM forces vision parts unquantized" : ""));
    else if (m.role == Role::LmHead || m.role == Role::Mtp || m.role == Role::LinearAttn)
      c.out.warning("role.quantized", m.name,
                    fmt::format("{} ({}) is NVFP4; fp4kit and ModelOpt keep it by default{}", m.name,
                                role_name(m.role),
                                m.role == Role::LinearAttn
                                    ? " (vLLM loads one scalar scale into a fused in_proj slot)" : ""));
    return;
  }
  // Not quantized.
  if (m.has_scales()) {
    std::vector<std::string> names;
    for (const TensorInfo* t : {m.weight_scale, m.global_scale, m.input_scale})
      if (t) names.push_back(t->name);
    if (excluded)
      c.out.error("exclude.has_scales", m.name,
                  fmt::format("{} is excluded by {} but carries {}: vLLM fails with \"no module or "
                              "parameter named '{}'\" (vllm #44081)", m.name, c.exclusion(m.exclude_pattern),
                              fmt::join(names, ", "), names.front()));
    else
      c.out.error("tensor.orphan", m.name,
                  fmt::format("{} has no packed NVFP4 weight ({}) but carries {}", m.name,
                              m.weight ? fmt::format("{} is {}", m.weight->name, dtype_name(m.weight->dtype))
                                       : "no weight at all",
                              fmt::join(names, ", ")));
  }
  if (!is_float_weight(m.weight) || excluded || !is_linear_role(m.role)) return;
  const size_t dims = m.weight->shape.size();
  if (dims != 2 && !(dims == 3 && (m.role == Role::FusedExpertGateUp || m.role == Role::FusedExpertDown)))
    return;
  if (!c.d.targets_module(m.name)) return;
  const uint64_t k = m.weight->shape.back();
  const std::string kmsg = k % 16 == 0 ? "" : fmt::format("; K = {} is not a multiple of 16, so it "
                                                          "must be listed in the exclusions", k);
  if (is_default_quantized_role(m.role)) {
    // The seed bug: declared NVFP4 (not excluded), stored in a float dtype.
    c.out.error("quant.unquantized", m.name,
                fmt::format("{} ({}) is declared {} (no exclusion matches) but stored as {} {}{}",
                            m.name, role_name(m.role), c.d.quant_algo, dtype_name(m.weight->dtype),
                            shape_str(m.weight->shape), kmsg));
  } else if (m.role == Role::LmHead && c.ct()) {
    // compressed-tensors targets "Linear" by class name; vLLM's ParallelLMHead is not one.
    return;
  } else if (m.role == Role::Router || m.role == Role::LmHead) {
    c.out.error("exclude.unlisted", m.name,
                fmt::format("{} ({}) is {} but not in the exclusions: vLLM builds it as an NVFP4 "
                            "layer unless excluded{}", m.name, role_name(m.role),
                            dtype_name(m.weight->dtype), kmsg));
  } else {
    c.out.warning("exclude.unlisted", m.name,
                  fmt::format("{} ({}) is {} but not in the exclusions: a loader may build it "
                              "quantized{}", m.name, role_name(m.role), dtype_name(m.weight->dtype), kmsg));
  }
}

// Block-scale bytes (spec 9.6): E4M3FN NaN codes 0x7F/0xFF, the sign bit, and zeros.
void scan_scale_bytes(const Ctx& c, std::vector<ModuleScales>& scales) {
  std::vector<size_t> todo;
  for (size_t i = 0; i < c.mods.size(); ++i)
    if (c.mods[i].quantized && c.mods[i].weight_scale &&
        (c.mods[i].weight_scale->dtype == DType::F8_E4M3 || c.mods[i].weight_scale->dtype == DType::U8))
      todo.push_back(i);
  struct Counts { uint64_t nan = 0, neg = 0, zero = 0, first_nan = 0, first_neg = 0; };
  std::vector<Counts> counts(todo.size());
  parallel_for(0, todo.size(), 1, [&](size_t b, size_t e) {
    for (size_t j = b; j < e; ++j) {
      const ModuleTensors& m = c.mods[todo[j]];
      const auto bytes = c.ckpt.bytes(m.weight_scale->name);
      Counts& ct = counts[j];
      ModuleScales& ms = scales[todo[j]];
      for (uint64_t i = 0; i < bytes.size(); ++i) {
        const uint8_t v = bytes[i];
        if ((v & 0x7F) == 0x7F) {
          if (ct.nan++ == 0) ct.first_nan = i;
        } else if (v & 0x80) {
          if (ct.neg++ == 0) ct.first_neg = i;
        } else if (v == 0) {
          if (ms.zero_positions.size() < kMaxZeroPositions) ms.zero_positions.push_back(i);
          ++ct.zero;
        }
      }
      ms.zero_scales = ct.zero;
      c.ckpt.release(m.weight_scale->name);
    }
  });
  for (size_t j = 0; j < todo.size(); ++j) {
    const ModuleTensors& m = c.mods[todo[j]];
    const auto& shape = m.weight_scale->shape;
    const uint64_t per_row = shape.size() >= 2 ? std::max<uint64_t>(shape.back(), 1) : 1;
    auto where = [&](uint64_t i) {
      if (shape.size() == 3 && shape[1] > 0)  // BMM [E, K/16, N]
        return fmt::format("expert {}, scale [{}, {}]", i / (shape[1] * per_row),
                           i / per_row % shape[1], i % per_row);
      return fmt::format("row {}, block {}", i / per_row, i % per_row);
    };
    const uint64_t total = m.weight_scale->numel();
    if (counts[j].nan)
      c.out.error("scale.nan", m.name,
                  fmt::format("{}: {} of {} block scales are the E4M3 NaN code 0x7F/0xFF (first at "
                              "{}): those blocks dequantize to NaN", m.weight_scale->name,
                              counts[j].nan, total, where(counts[j].first_nan)));
    if (counts[j].neg)
      c.out.error("scale.negative", m.name,
                  fmt::format("{}: {} of {} block scales have the sign bit set (first at {}): "
                              "scales are block amax / (6 * s2) >= 0, Marlin misreads them",
                              m.weight_scale->name, counts[j].neg, total, where(counts[j].first_neg)));
    if (counts[j].zero && !c.report.numeric)
      c.out.warning("scale.zero", m.name,
                    fmt::format("{}: {} of {} block scales are 0 (first at {}): those blocks "
                                "dequantize to zero; fp4kit and ModelOpt write 0x38 for an all-zero "
                                "block (run with --source to compare with the source blocks)",
                                m.weight_scale->name, counts[j].zero, total,
                                where(scales[todo[j]].zero_positions.front())));
  }
}

struct GroupMember {
  size_t index;
  std::optional<float> global, input;
};

// Fusion groups (spec section 3): members of one fused GEMM must share the global weight scale.
void check_fusion_groups(const Ctx& c, const std::vector<ModuleScales>& scales) {
  std::set<std::string> parents_with_kv_a;
  for (const auto& m : c.mods)
    if (m.role == Role::MlaKVA) parents_with_kv_a.insert(std::string(parent_of(m.name)));
  std::map<std::string, std::vector<size_t>> groups;
  for (size_t i = 0; i < c.mods.size(); ++i) {
    const ModuleTensors& m = c.mods[i];
    if (!m.weight || (!m.quantized && !is_float_weight(m.weight))) continue;
    const std::string key =
        fusion_key(m.name, m.role, parents_with_kv_a.count(std::string(parent_of(m.name))) > 0);
    if (!key.empty()) groups[key].push_back(i);
  }
  for (const auto& [key, members] : groups) {
    if (members.size() < 2) continue;
    std::vector<GroupMember> q;
    std::vector<std::string> plain;
    for (size_t i : members) {
      const ModuleTensors& m = c.mods[i];
      if (!m.quantized) {
        plain.push_back(m.name);
        continue;
      }
      GroupMember g{i, std::nullopt, std::nullopt};
      if (m.global_scale) g.global = read_scalar(c.ckpt, *m.global_scale);
      if (m.input_scale) g.input = read_scalar(c.ckpt, *m.input_scale);
      q.push_back(g);
    }
    if (!q.empty()) ++c.report.fusion_groups;
    if (!q.empty() && !plain.empty()) {
      c.out.error("fusion.partial", plain.front(),
                  fmt::format("fusion group {}: {} NVFP4 but {} not; a loader fuses them into one "
                              "layer with one scheme (vLLM: \"Found a different quantization "
                              "schemes\")", key, c.mods[q.front().index].name, fmt::join(plain, ", ")));
      continue;
    }
    auto compare = [&](bool weight) {
      std::optional<float> ref;
      size_t ref_i = 0;
      for (const auto& g : q) {
        const auto& v = weight ? g.global : g.input;
        if (!v) continue;
        if (!ref) { ref = v; ref_i = g.index; continue; }
        if (std::memcmp(&*v, &*ref, sizeof(float)) != 0) {
          std::vector<std::string> vals;
          for (const auto& h : q) {
            const auto& hv = weight ? h.global : h.input;
            vals.push_back(fmt::format("{}={}", last_of(c.mods[h.index].name),
                                       hv ? fmt::format("{:.9g}", *hv) : "?"));
          }
          if (weight)
            c.out.error("fusion.weight_scale_2", c.mods[g.index].name,
                        fmt::format("fusion group {}: {} differs from {} ({}); loaders keep one "
                                    "global scale for the fused weight (vLLM: max for dense, the "
                                    "gate's for MoE) and mis-scale the others (vllm #54974)",
                                    key, c.global_name(), c.mods[ref_i].name, fmt::join(vals, ", ")));
          else
            c.out.warning("fusion.input_scale", c.mods[g.index].name,
                          fmt::format("fusion group {}: {} differs from {} ({}); engines use one "
                                      "activation scale per fused layer (the max)", key,
                                      c.input_name(), c.mods[ref_i].name, fmt::join(vals, ", ")));
          return;
        }
      }
    };
    compare(true);
    compare(false);
  }
}

// Routed experts of one MoE layer: all present, one input scale per projection kind.
void check_experts(const Ctx& c, int64_t config_num_experts) {
  struct Kind { std::vector<std::pair<int64_t, float>> inputs; };
  std::map<std::string, std::map<std::string, std::set<int64_t>>> present;  // moe -> proj -> ids
  std::map<std::string, std::vector<std::pair<int64_t, float>>> inputs;     // moe:kind -> values
  for (const auto& m : c.mods) {
    if (!m.weight) continue;
    const auto e = parse_expert(m.name);
    if (!e || !(m.role == Role::ExpertGate || m.role == Role::ExpertUp || m.role == Role::ExpertDown))
      continue;
    present[e->moe][e->proj].insert(e->index);
    if (m.quantized && m.input_scale) {
      if (const auto v = read_scalar(c.ckpt, *m.input_scale)) {
        const std::string kind = m.role == Role::ExpertDown ? "down" : "gate/up";
        inputs[e->moe + "|" + kind].push_back({e->index, *v});
      }
    }
  }
  int64_t expected = config_num_experts;
  if (expected <= 0)
    for (const auto& [moe, projs] : present)
      for (const auto& [proj, ids] : projs)
        if (!ids.empty()) expected = std::max<int64_t>(expected, *ids.rbegin() + 1);
  for (const auto& [moe, projs] : present) {
    for (const auto& [proj, ids] : projs) {
      std::vector<int64_t> missing;
      for (int64_t i = 0; i < expected && missing.size() < 8; ++i)
        if (!ids.count(i)) missing.push_back(i);
      if (!missing.empty())
        c.out.error("experts.missing", moe,
                    fmt::format("{}: {} of {} experts have no {} (missing e.g. {}){}", moe,
                                expected - static_cast<int64_t>(ids.size()), expected, proj,
                                fmt::join(missing, ", "),
                                config_num_experts > 0 ? " (count from config.json)" : ""));
    }
  }
  if (c.d.weights_only) return;
  for (const auto& [key, vals] : inputs) {
    const auto bar = key.find('|');
    const std::string moe = key.substr(0, bar), kind = key.substr(bar + 1);
    const auto [lo, hi] = std::minmax_element(vals.begin(), vals.end(),
                                              [](auto& a, auto& b) { return a.second < b.second; });
    if (lo->second != hi->second)
      c.out.warning("input_scale.experts", moe,
                    fmt::format("{}: the {} {} differs across {} experts (min {:.6g} at expert {}, "
                                "max {:.6g} at expert {}): FlashInfer backends collapse them to the "
                                "max; ModelOpt writes one value per layer", moe, kind, c.input_name(),
                                vals.size(), lo->second, lo->first, hi->second, hi->first));
  }
}

// K % 16 per tensor-parallel shard (spec 9.7): column-parallel layers split N, row-parallel
// layers split K and each shard's K must still be a multiple of 16.
void check_tensor_parallel(const Ctx& c) {
  static constexpr int kTp[] = {1, 2, 4, 8};
  for (int tp : kTp) {
    uint64_t bad = 0;
    std::string first;
    for (const auto& m : c.mods) {
      if (!m.quantized || !m.weight || m.weight->shape.size() != 2) continue;
      const uint64_t n = m.rows(), k = m.cols();
      bool ok = true;
      switch (tp_split(m.role, m.name)) {
        case TpSplit::Column: ok = n % tp == 0 && k % 16 == 0; break;
        case TpSplit::Row: ok = k % tp == 0 && (k / tp) % 16 == 0; break;
        case TpSplit::None: ok = k % 16 == 0; break;
      }
      if (!ok && bad++ == 0)
        first = fmt::format("{} [N={}, K={}] ({}-parallel)", m.name, n, k,
                            tp_split(m.role, m.name) == TpSplit::Row ? "row" : "column");
    }
    if (bad == 0) c.report.supported_tp.push_back(tp);
    else
      c.out.info("tp.shard", first.substr(0, first.find(' ')),
                 fmt::format("tensor parallel size {} is not supported: {} modules have a shard "
                             "that is not a whole number of 16-blocks, e.g. {}", tp, bad, first));
  }
}

void count_and_size(const Ctx& c) {
  VerifyReport& r = c.report;
  uint64_t unquantized_declared = 0, saved = 0;
  for (const auto& name : c.ckpt.tensor_names()) r.actual_bytes += c.ckpt.info(name).nbytes();
  r.tensors = c.ckpt.tensor_names().size();
  for (const auto& m : c.mods) {
    for (const TensorInfo* t : {m.weight, m.weight_scale, m.global_scale, m.input_scale, m.unpacked_weight})
      if (t && t != m.weight) r.total_params += t->numel();
    for (const TensorInfo* t : m.others) r.total_params += t->numel();
    for (const TensorInfo* t : m.foreign) r.total_params += t->numel();
    r.total_params += m.params();
    if (m.exclude_pattern >= 0) ++r.modules_excluded;
    if (m.quantized) {
      ++r.modules_quantized;
      r.linear_params += m.params();
      r.quantized_params += m.params();
      continue;
    }
    if (!is_float_weight(m.weight) || !is_linear_role(m.role)) continue;
    if (m.weight->shape.size() < 2) continue;
    ++r.modules_unquantized_linear;
    r.linear_params += m.params();
    if (m.exclude_pattern < 0 && is_default_quantized_role(m.role) && c.d.targets_module(m.name)) {
      ++unquantized_declared;
      // What this module would take as NVFP4: K/2 + K/16 bytes per row plus the scalars.
      // (one module per 2-D matrix: E of them for a fused 3-D expert tensor).
      const uint64_t p = m.params();
      const uint64_t matrices = m.weight->shape.size() == 3 ? m.weight->shape[0] : 1;
      const uint64_t nvfp4 = p / 2 + p / 16 + 4 * matrices * (c.d.weights_only ? 1 : 2);
      saved += m.weight->nbytes() > nvfp4 ? m.weight->nbytes() - nvfp4 : 0;
    }
  }
  r.expected_bytes = r.actual_bytes - saved;
  if (c.d.format != QuantFormat::None && r.modules_quantized == 0)
    c.out.error("quant.total", "",
                fmt::format("the config declares {} but no module holds a packed NVFP4 weight",
                            c.d.quant_algo));
  else if (unquantized_declared > 0)
    c.out.error("quant.total", "",
                fmt::format("{} modules declared NVFP4 are stored unquantized: {:.1f}% of linear "
                            "parameters are NVFP4 ({} of {}); expected size {:.1f} MB, actual {:.1f} MB",
                            unquantized_declared, 100.0 * r.quantized_fraction(), r.quantized_params,
                            r.linear_params, r.expected_bytes / 1e6, r.actual_bytes / 1e6));
}

void check_unmatched_exclusions(const Ctx& c) {
  const auto& pats = c.d.exclusions.patterns();
  for (size_t i = 0; i < pats.size(); ++i) {
    bool hit = false;
    for (const auto& m : c.mods)
      if ((hit = c.d.exclusions.pattern_matches(i, m.name))) break;
    if (!hit)
      c.out.info("exclude.unmatched", "",
                 fmt::format("exclusion '{}' ({}) matches no module of this checkpoint", pats[i],
                             c.d.exclusions_origin));
  }
}

}  // namespace

std::vector<ModuleScales> run_structural_checks(const Checkpoint& ckpt, const DeclaredQuant& declared,
                                                const std::vector<ModuleTensors>& mods,
                                                int64_t config_num_experts, Findings& out,
                                                VerifyReport& report) {
  Ctx c{ckpt, declared, mods, out, report};
  std::vector<ModuleScales> scales(mods.size());
  for (size_t i = 0; i < mods.size(); ++i) {
    const ModuleTensors& m = mods[i];
    check_foreign(c, m);
    check_mxfp4_leftovers(c, m);
    if (m.quantized) check_quantized_tensors(c, m, scales[i]);
    check_module(c, m);
  }
  scan_scale_bytes(c, scales);
  check_fusion_groups(c, scales);
  check_experts(c, config_num_experts);
  check_tensor_parallel(c);
  check_unmatched_exclusions(c);
  count_and_size(c);
  return scales;
}

}  // namespace fp4kit::verify
