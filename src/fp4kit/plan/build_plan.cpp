// Plan building: classify every tensor, expand fused 3-D experts into per-expert modules, apply the
// default keep-rules (spec 7), then the user's rules (later wins), validate everything, and only
// then lay out entries and fusion groups (spec 3). Every problem is collected and reported at once.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <unordered_map>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/classify.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/model/packed_int.hpp"
#include "fp4kit/plan/glob.hpp"
#include "fp4kit/plan/plan.hpp"

namespace fp4kit {
namespace {

std::string shape_text(const std::vector<uint64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

// A unit the plan decides on: one Linear weight, or one expert's slice of a fused 3-D tensor.
struct Module {
  std::string name;  // module name (no ".weight")
  size_t tensor = 0;
  Role role = Role::Other;
  int64_t expert = -1;
  SourceSlice source;
  uint64_t rows = 0, cols = 0;
  uint64_t bmm_experts = 0;   // BMM 3-D experts: E matrices [rows, cols] = [N, K] (spec 4)
  std::string mxfp4_scales;   // MXFP4 source ("<m>_blocks"): its "<m>_scales" tensor
  bool quantize = false;
  std::string reason;
  int rule = -1;  // index of the user rule that decided it, -1 for a default
};

// What the default rules (spec 7) say about a Linear weight.
void default_decision(const TensorClass& c, const ArchFamily& family, const PlanOptions& opt,
                      Module& m, std::vector<std::string>& warnings) {
  auto keep = [&](std::string why) { m.quantize = false, m.reason = std::move(why); };
  auto quant = [&](std::string why) { m.quantize = true, m.reason = std::move(why); };
  switch (c.role) {
    case Role::Router: keep("default: MoE router (spec 7)"); break;
    case Role::SharedExpertGate: keep("default: shared_expert_gate (spec 7)"); break;
    case Role::LmHead: keep("default: lm_head / output layer (spec 7)"); break;
    case Role::Vision: keep("default: vision/audio tower (spec 7)"); break;
    case Role::Mtp: keep("default: MTP layer (spec 7): " + c.rule); break;
    case Role::LinearAttn:
      if (c.linear_attn == LinearAttnPart::None)
        keep("default: linear attention part never quantized (spec 7)");
      else if (opt.quantize_linear_attn)
        quant("option: quantize_linear_attn");
      else
        keep("default: linear attention (spec 7; quantize_linear_attn to quantize it)");
      break;
    case Role::OtherLinear:
      if (family.name == "generic") {
        quant("generic: " + c.rule);
      } else {
        keep(fmt::format("not in the {} table: kept (--include to quantize)", family.name));
        warnings.push_back(fmt::format("{}: 2-D weight not in the {} table, kept ({})", m.name,
                                       family.name, c.rule));
      }
      break;
    case Role::AttnQ: case Role::AttnK: case Role::AttnV: case Role::AttnO:
      quant(family.name == "generic" ? "generic: attention projection"
                                     : "default: attention projection");
      break;
    case Role::MlaQA: case Role::MlaKVA: case Role::MlaQB: case Role::MlaKVB:
      quant("default: MLA projection");
      break;
    case Role::MlpGate: case Role::MlpUp: case Role::MlpDown:
      quant(family.name == "generic" ? "generic: MLP projection" : "default: MLP projection");
      break;
    case Role::ExpertGate: case Role::ExpertUp: case Role::ExpertDown:
    case Role::FusedExpertGateUp: case Role::FusedExpertDown:
      quant("default: routed expert");
      break;
    case Role::BmmExpertGateUp: case Role::BmmExpertDown:
      quant("default: routed experts (BMM 3-D, written 3-D as ModelOpt does, spec 4)");
      break;
    case Role::SharedGate: case Role::SharedUp: case Role::SharedDown:
      quant("default: shared expert");
      break;
    default:
      keep("not a Linear weight");
      break;
  }
}

// The reason a kept non-Linear tensor gets.
std::string keep_reason(const TensorClass& c) {
  switch (c.role) {
    case Role::Norm: return "default: norm (spec 7)";
    case Role::Embedding: return "default: embedding (spec 7)";
    case Role::Bias: return "bias: copied (biases stay unquantized)";
    case Role::RouterBias: return "default: e_score_correction_bias (spec 7)";
    case Role::LinearAttn: return "default: linear attention part never quantized (spec 7)";
    case Role::Vision: return "default: vision/audio tower (spec 7)";
    case Role::Mtp: return "default: MTP layer (spec 7): " + c.rule;
    default: return "not a Linear weight: copied";
  }
}

struct ExpertParts {
  std::array<int64_t, 3> tensor = {-1, -1, -1};  // gate, up, down: index into tensors
};

int expert_part(Role r) {
  return r == Role::ExpertGate ? 0 : r == Role::ExpertUp ? 1 : r == Role::ExpertDown ? 2 : -1;
}

// The name expert `e` would have, from a sibling's name (".experts.<k>." -> ".experts.<e>.").
std::string sibling_name(const std::string& name, int64_t from, int64_t to) {
  const std::string needle = ".experts." + std::to_string(from) + ".";
  size_t at = name.find(needle);
  if (at == std::string::npos) return name;
  return name.substr(0, at) + ".experts." + std::to_string(to) + "." +
         name.substr(at + needle.size());
}

// compressed-tensors pack-quantized sources: each "<m>.weight_packed" (I32) + "<m>.weight_scale" +
// "<m>.weight_shape" stands in the list as the "<m>.weight" [n, k] it encodes (F32: what the
// decode gives), so the tables, the expert checks and the rules see the model's Linear; the
// packed tensors are remembered by that name.
struct PackedSources {
  std::vector<TensorMeta> tensors;                      // the list with the triples folded
  std::map<std::string, PackedIntWeight> by_weight;     // "<m>.weight" -> its packed tensors
};

PackedSources fold_packed_int(const std::vector<TensorMeta>& tensors, const ModelConfig& config,
                              const SmallTensorValues& values) {
  PackedSources out;
  std::unordered_map<std::string, const TensorMeta*> by_name;
  for (const auto& t : tensors) by_name[t.name] = &t;
  static const std::string kPacked = ".weight_packed";
  std::vector<std::string> modules;
  for (const auto& t : tensors)
    if (t.dtype == DType::I32 && t.name.ends_with(kPacked))
      modules.push_back(t.name.substr(0, t.name.size() - kPacked.size()));
  if (modules.empty()) {
    out.tensors = tensors;
    return out;
  }
  const auto schemes = packed_int_schemes(config.raw, "config.json");
  PackedIntLookup lookup;
  lookup.meta = [&](const std::string& n) -> const TensorMeta* {
    auto it = by_name.find(n);
    return it == by_name.end() ? nullptr : it->second;
  };
  lookup.values = [&](const std::string& n) {
    if (!values)
      throw Error(fmt::format("{}: the values of a pack-quantized weight_shape are needed", n));
    return values(n);
  };
  std::set<std::string> folded;
  std::vector<std::string> errors;
  for (const auto& m : modules) {
    try {
      PackedIntWeight w = resolve_packed_int(m, schemes, lookup, "checkpoint");
      folded.insert({w.packed, w.scale, w.shape_tensor});
      out.by_weight[m + ".weight"] = std::move(w);
    } catch (const Error& e) {
      errors.push_back(e.what());
    }
  }
  if (!errors.empty()) {
    std::string msg = fmt::format("plan: {} pack-quantized weight(s) cannot be read:", errors.size());
    for (size_t i = 0; i < errors.size() && i < 50; ++i) msg += "\n  - " + errors[i];
    throw Error(msg);
  }
  for (const auto& t : tensors) {
    if (!folded.count(t.name)) {
      out.tensors.push_back(t);
      continue;
    }
    if (!t.name.ends_with(kPacked)) continue;
    const std::string weight = t.name.substr(0, t.name.size() - kPacked.size()) + ".weight";
    const PackedIntWeight& w = out.by_weight.at(weight);
    out.tensors.push_back({weight, DType::F32, {w.rows, w.cols}});
  }
  return out;
}

class PlanBuilder {
 public:
  PlanBuilder(const std::vector<TensorMeta>& tensors, const ModelConfig& config,
              const PlanOptions& options,
              const std::map<std::string, PackedIntWeight>& packed)
      : tensors_(tensors), config_(config), options_(options), packed_(packed) {}

  Plan build() {
    choose_family();
    TensorClassifier classifier(*family_, config_);
    classes_.reserve(tensors_.size());
    for (const auto& t : tensors_) classes_.push_back(classifier.classify(t));
    for (size_t i = 0; i < tensors_.size(); ++i) by_name_[tensors_[i].name] = i;

    make_modules();
    check_experts();
    apply_rules();
    check_fused_consistency();
    check_fp8_sources();
    check_mxfp4_leftovers();
    if (!errors_.empty()) {
      // All of them, up to a length a terminal can still show (a systematically broken
      // checkpoint can have one problem per expert).
      constexpr size_t kMaxListed = 200;
      std::string msg = fmt::format("plan: {} problem(s):", errors_.size());
      for (size_t i = 0; i < errors_.size() && i < kMaxListed; ++i) msg += "\n  - " + errors_[i];
      if (errors_.size() > kMaxListed)
        msg += fmt::format("\n  ... and {} more of the same kinds",
                           errors_.size() - kMaxListed);
      throw Error(msg);
    }
    lay_out_entries();
    make_groups();
    make_exclude_list();
    plan_.warnings.insert(plan_.warnings.end(), warnings_.begin(), warnings_.end());
    validate_exclude_list(plan_);
    return std::move(plan_);
  }

 private:
  void choose_family() {
    family_ = find_family(config_.model_type, config_.architectures);
    if (!family_) {
      family_ = &generic_family();
      std::string archs;
      for (const auto& a : config_.architectures) archs += (archs.empty() ? "" : ", ") + a;
      warnings_.push_back(fmt::format(
          "unknown model family (model_type '{}', architectures [{}]): generic fallback "
          "recognises Linear weights by name and shape; check this plan",
          config_.model_type, archs));
    }
    plan_.family = std::string(family_->name);
  }

  // One module per Linear weight; fused 3-D experts become one module per expert and projection.
  void make_modules() {
    std::map<std::string, std::pair<int64_t, int64_t>> fused;  // moe_block -> (gate_up, down)
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorClass& c = classes_[i];
      if (c.role == Role::FusedExpertGateUp) fused[c.moe_block].first = i + 1;
      if (c.role == Role::FusedExpertDown) fused[c.moe_block].second = i + 1;
    }
    for (auto& [block, pair] : fused) check_fused_layout(block, pair.first - 1, pair.second - 1);
    check_bmm_layouts();

    // 3-D expert tensors that no table knows (feed_forward.experts of an unknown family, ...):
    // refuse clearly. MXFP4 "_scales" go with their "_blocks" (checked there).
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorClass& c = classes_[i];
      const std::string& n = tensors_[i].name;
      const bool mxfp4_scales =
          n.ends_with("_scales") && by_name_.count(n.substr(0, n.size() - 7) + "_blocks");
      if (tensors_[i].shape.size() == 3 && n.find("experts.") != std::string::npos &&
          c.role != Role::FusedExpertGateUp && c.role != Role::FusedExpertDown &&
          c.role != Role::BmmExpertGateUp && c.role != Role::BmmExpertDown &&
          c.role != Role::Vision && c.role != Role::Mtp && !mxfp4_scales)
        errors_.push_back(fmt::format(
            "{} {}: 3-D expert tensor in a layout fp4kit does not know for family {} (known: "
            "fused [E, 2I, H] of the Qwen-style families, BMM [E, H, 2I] of gpt_oss / llama4)",
            n, shape_text(tensors_[i].shape), family_->name));
    }
    module_of_tensor_.assign(tensors_.size(), {});
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorClass& c = classes_[i];
      const TensorMeta& t = tensors_[i];
      if (!c.linear_weight) continue;
      if (c.role == Role::BmmExpertGateUp || c.role == Role::BmmExpertDown) {
        if (bmm_ok_.count(i)) add_bmm_module(i);  // else an error is already recorded
        continue;
      }
      if (c.role == Role::FusedExpertGateUp || c.role == Role::FusedExpertDown) {
        if (!fused_ok_.count(i)) continue;  // error already recorded
        const std::string base = c.moe_block + ".experts.";
        const uint64_t E = t.shape[0], R = t.shape[1], K = t.shape[2];
        for (uint64_t e = 0; e < E; ++e) {
          if (c.role == Role::FusedExpertGateUp) {
            add_fused_module(i, base + std::to_string(e) + ".gate_proj", Role::ExpertGate, e, 0,
                             R / 2, K);
            add_fused_module(i, base + std::to_string(e) + ".up_proj", Role::ExpertUp, e, R / 2,
                             R, K);
          } else {
            add_fused_module(i, base + std::to_string(e) + ".down_proj", Role::ExpertDown, e, 0,
                             R, K);
          }
        }
        continue;
      }
      Module m;
      m.name = c.module;
      m.tensor = i;
      m.role = c.role;
      m.expert = c.expert;
      m.rows = t.shape[0];
      m.cols = t.shape[1];
      m.source = {t.name, -1, 0, m.rows};
      default_decision(c, *family_, options_, m, warnings_);
      apply_shape_limits(m);
      module_of_tensor_[i].push_back(modules_.size());
      modules_.push_back(std::move(m));
    }
  }

  void add_fused_module(size_t tensor, std::string name, Role role, uint64_t e, uint64_t r0,
                        uint64_t r1, uint64_t cols) {
    Module m;
    m.name = std::move(name);
    m.tensor = tensor;
    m.role = role;
    m.expert = static_cast<int64_t>(e);
    m.rows = r1 - r0;
    m.cols = cols;
    m.source = {tensors_[tensor].name, static_cast<int64_t>(e), r0, r1};
    default_decision(classes_[tensor], *family_, options_, m, warnings_);
    apply_shape_limits(m);
    module_of_tensor_[tensor].push_back(modules_.size());
    modules_.push_back(std::move(m));
  }

  // A BMM expert tensor is one module, quantized (or kept) whole: E matrices [N, K], the transpose
  // of each source[e] [K, N]; MXFP4 blocks [E, N, K/32, 16] already hold [N, K].
  void add_bmm_module(size_t tensor) {
    const TensorMeta& t = tensors_[tensor];
    const TensorClass& c = classes_[tensor];
    Module m;
    m.tensor = tensor;
    m.role = c.role;
    m.bmm_experts = t.shape[0];
    if (is_mxfp4_blocks(t)) {
      m.name = c.module.substr(0, c.module.size() - kBlocksSuffix.size());
      m.mxfp4_scales = m.name + "_scales";
      m.rows = t.shape[1];
      m.cols = t.shape[2] * kMxfp4BlockSize;
    } else {
      m.name = c.module;
      m.rows = t.shape[2];
      m.cols = t.shape[1];
    }
    m.source = {t.name, -1, 0, m.rows};
    default_decision(c, *family_, options_, m, warnings_);
    apply_shape_limits(m);
    module_of_tensor_[tensor].push_back(modules_.size());
    modules_.push_back(std::move(m));
  }

  static constexpr std::string_view kBlocksSuffix = "_blocks";
  static bool is_mxfp4_blocks(const TensorMeta& t) {
    return t.shape.size() == 4 && t.dtype == DType::U8 && t.name.ends_with(kBlocksSuffix);
  }

  // The [E, K, N] shape a BMM tensor stands for (MXFP4 blocks [E, N, K/32, 16] included), after
  // checking an MXFP4 pair; empty (error recorded) when unusable.
  std::vector<uint64_t> bmm_shape(size_t i) {
    const TensorMeta& t = tensors_[i];
    if (t.shape.size() == 3) {
      if (!dtype_is_float(t.dtype)) {
        errors_.push_back(fmt::format("{} {} {}: BMM expert tensor of a non-float dtype (neither "
                                      "BF16/F16/F32 nor MXFP4 _blocks + _scales)",
                                      t.name, dtype_name(t.dtype), shape_text(t.shape)));
        return {};
      }
      return t.shape;
    }
    if (!is_mxfp4_blocks(t) || t.shape[3] != kMxfp4BlockSize / 2) {
      errors_.push_back(fmt::format("{} {} {}: not an MXFP4 blocks tensor (U8 [E, N, K/32, 16])",
                                    t.name, dtype_name(t.dtype), shape_text(t.shape)));
      return {};
    }
    const std::string scales =
        t.name.substr(0, t.name.size() - kBlocksSuffix.size()) + "_scales";
    auto it = by_name_.find(scales);
    if (it == by_name_.end()) {
      errors_.push_back(fmt::format("{} {}: MXFP4 blocks without their E8M0 scale tensor {}",
                                    t.name, shape_text(t.shape), scales));
      return {};
    }
    const TensorMeta& st = tensors_[it->second];
    const std::vector<uint64_t> want = {t.shape[0], t.shape[1], t.shape[2]};
    if (st.dtype != DType::U8 || st.shape != want) {
      errors_.push_back(fmt::format("{} {} {}: expected U8 {} (one E8M0 scale per 32 values of {})",
                                    st.name, dtype_name(st.dtype), shape_text(st.shape),
                                    shape_text(want), t.name));
      return {};
    }
    return {t.shape[0], t.shape[2] * kMxfp4BlockSize, t.shape[1]};
  }

  // BMM experts (gpt-oss, Llama-4, spec 4): gate_up [E, H, 2I] and down [E, I, H] of one MoE
  // block, both present, agreeing with each other, hidden_size and num_experts.
  void check_bmm_layouts() {
    std::map<std::string, std::pair<int64_t, int64_t>> blocks;  // moe_block -> (gate_up, down)
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorClass& c = classes_[i];
      if (!c.linear_weight) continue;
      if (c.role == Role::BmmExpertGateUp) blocks[c.moe_block].first = i + 1;
      if (c.role == Role::BmmExpertDown) blocks[c.moe_block].second = i + 1;
    }
    for (auto& [block, pair] : blocks) {
      const int64_t gu = pair.first - 1, dn = pair.second - 1;
      if (gu < 0 || dn < 0) {
        errors_.push_back(fmt::format("{}: BMM experts need both gate_up_proj and down_proj, "
                                      "found only {}",
                                      block, tensors_[gu >= 0 ? gu : dn].name));
        continue;
      }
      const auto a = bmm_shape(gu), b = bmm_shape(dn);
      if (a.empty() || b.empty()) continue;
      const uint64_t H = config_.hidden_size > 0 ? static_cast<uint64_t>(config_.hidden_size) : 0;
      if (a[0] != b[0] || a[2] != 2 * b[1] || a[1] != b[2] || (H != 0 && a[1] != H)) {
        errors_.push_back(fmt::format(
            "{} / {}: not the BMM expert layout gate_up [E, H, 2I] + down [E, I, H] (as [E, K, "
            "N]: {} and {}, hidden_size {})",
            tensors_[gu].name, tensors_[dn].name, shape_text(a), shape_text(b),
            config_.hidden_size));
        continue;
      }
      if (config_.num_experts > 0 && a[0] != static_cast<uint64_t>(config_.num_experts)) {
        errors_.push_back(fmt::format("{} {}: {} experts, config num_experts is {}",
                                      tensors_[gu].name, shape_text(tensors_[gu].shape), a[0],
                                      config_.num_experts));
        continue;
      }
      bmm_ok_.insert(gu);
      bmm_ok_.insert(dn);
    }
  }

  // Spec 7: K % 16 != 0 is kept and reported; a non-float source cannot be quantized.
  void apply_shape_limits(Module& m) {
    if (!m.quantize) return;
    const DType dt = m.mxfp4_scales.empty() ? tensors_[m.tensor].dtype : DType::F32;
    if (m.cols == 0 || m.rows == 0) {
      m.quantize = false;
      m.reason = "empty weight";
    } else if (m.cols % options_.k_multiple != 0) {
      m.quantize = false;
      m.reason = fmt::format("K={} not a multiple of {}{}", m.cols, options_.k_multiple,
                             options_.k_multiple_why);
      // A fused 3-D tensor is kept whole: report it once, by its own name.
      k16_kept_.insert(m.source.expert >= 0 ? m.source.tensor : m.name);
    } else if (!dtype_is_float(dt)) {
      m.quantize = false;
      m.reason = fmt::format("source dtype {} is not a float type", dtype_name(dt));
      warnings_.push_back(fmt::format("{}: source dtype {} cannot be quantized, kept", m.name,
                                      dtype_name(dt)));
    }
  }

  // Fused [E, 2I, H] gate_up + [E, H, I] down; the BMM layout [E, H, 2I] + [E, I, H] (Llama-4,
  // gpt-oss) is told apart by which dimensions the two tensors share.
  void check_fused_layout(const std::string& block, int64_t gu, int64_t dn) {
    if (gu < 0 || dn < 0) {
      const std::string have = tensors_[gu >= 0 ? gu : dn].name;
      errors_.push_back(fmt::format("{}: fused experts need both gate_up_proj and down_proj, "
                                    "found only {}",
                                    block, have));
      return;
    }
    const TensorMeta& a = tensors_[gu];
    const TensorMeta& b = tensors_[dn];
    if (a.shape.size() != 3 || b.shape.size() != 3) {
      errors_.push_back(fmt::format("{} {} / {} {}: fused expert tensors must be 3-D", a.name,
                                    shape_text(a.shape), b.name, shape_text(b.shape)));
      return;
    }
    const uint64_t H = config_.hidden_size > 0 ? static_cast<uint64_t>(config_.hidden_size) : 0;
    const bool fused = a.shape[0] == b.shape[0] && a.shape[2] == b.shape[1] &&
                       a.shape[1] == 2 * b.shape[2] && (H == 0 || a.shape[2] == H);
    const bool bmm = a.shape[0] == b.shape[0] && a.shape[1] == b.shape[2] &&
                     a.shape[2] == 2 * b.shape[1] && (H == 0 || a.shape[1] == H);
    if (!fused && bmm) {
      errors_.push_back(fmt::format(
          "{} {} / {} {}: shaped like the BMM expert layout [E, H, 2I] of gpt-oss / Llama-4, "
          "but family {} stores experts as [E, 2I, H]; fp4kit does not guess the orientation "
          "(a config model_type of gpt_oss or llama4 selects the BMM layout)",
          a.name, shape_text(a.shape), b.name, shape_text(b.shape), family_->name));
      return;
    }
    if (!fused) {
      errors_.push_back(fmt::format(
          "{} {} / {} {}: not the fused expert layout gate_up [E, 2I, H] + down [E, H, I]"
          " (hidden_size {})",
          a.name, shape_text(a.shape), b.name, shape_text(b.shape), config_.hidden_size));
      return;
    }
    if (config_.num_experts > 0 && a.shape[0] != static_cast<uint64_t>(config_.num_experts)) {
      errors_.push_back(fmt::format("{} {}: {} experts, config num_experts is {}", a.name,
                                    shape_text(a.shape), a.shape[0], config_.num_experts));
      return;
    }
    fused_ok_.insert(gu);
    fused_ok_.insert(dn);
  }

  // Every routed expert is checked on its own: all three projections present, gate and up the
  // same shape, down its transpose, the same shapes and dtype as its siblings, and the router's
  // row count equal to the number of experts. Nothing is inferred from expert 0.
  void check_experts() {
    std::map<std::string, std::map<int64_t, ExpertParts>> blocks;
    std::map<std::string, int64_t> routers;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorClass& c = classes_[i];
      int part = expert_part(c.role);
      if (part >= 0 && c.expert >= 0) {
        if (tensors_[i].shape.size() != 2) {
          errors_.push_back(fmt::format("{} {}: an expert weight must be 2-D", tensors_[i].name,
                                        shape_text(tensors_[i].shape)));
          continue;
        }
        blocks[c.moe_block][c.expert].tensor[part] = i;
      }
      if (c.role == Role::Router && tensors_[i].shape.size() == 2) routers[c.moe_block] = i;
    }
    static const char* kPart[3] = {"gate", "up", "down"};
    for (auto& [block, experts] : blocks) {
      int64_t n = config_.num_experts;
      const int64_t max_seen = experts.rbegin()->first;
      if (n <= 0) n = max_seen + 1;
      if (max_seen >= n) {
        for (auto& [e, p] : experts)
          if (e >= n)
            errors_.push_back(fmt::format("{}: expert {} beyond num_experts {} ({})", block, e,
                                          n, tensors_[*std::max_element(p.tensor.begin(),
                                                                        p.tensor.end())]
                                                 .name));
      }
      // A sibling name for every part, to name missing tensors exactly.
      std::array<std::pair<int64_t, int64_t>, 3> example = {{{-1, -1}, {-1, -1}, {-1, -1}}};
      for (auto& [e, p] : experts)
        for (int k = 0; k < 3; ++k)
          if (p.tensor[k] >= 0 && example[k].first < 0) example[k] = {p.tensor[k], e};
      // Most common (gate shape, down shape, dtype) among complete experts: the reference the
      // odd ones are reported against (reported, never used to fill anything in).
      std::map<std::string, int> votes;
      auto signature = [&](const ExpertParts& p) {
        return fmt::format("gate/up {} down {} {}", shape_text(tensors_[p.tensor[0]].shape),
                           shape_text(tensors_[p.tensor[2]].shape),
                           dtype_name(tensors_[p.tensor[0]].dtype));
      };
      for (int64_t e = 0; e < n; ++e) {
        auto it = experts.find(e);
        bool complete = it != experts.end();
        for (int k = 0; k < 3; ++k) {
          if (it != experts.end() && it->second.tensor[k] >= 0) continue;
          complete = false;
          if (example[k].first >= 0)
            errors_.push_back(fmt::format(
                "{}: expert {} is missing its {} projection ({})", block, e, kPart[k],
                sibling_name(tensors_[example[k].first].name, example[k].second, e)));
          else
            errors_.push_back(fmt::format("{}: expert {} is missing its {} projection", block,
                                          e, kPart[k]));
        }
        if (!complete) continue;
        const ExpertParts& p = it->second;
        const TensorMeta& g = tensors_[p.tensor[0]];
        const TensorMeta& u = tensors_[p.tensor[1]];
        const TensorMeta& d = tensors_[p.tensor[2]];
        if (g.shape != u.shape || g.dtype != u.dtype) {
          errors_.push_back(fmt::format("{}: gate {} {} and up {} {} of expert {} differ",
                                        block, g.name, shape_text(g.shape), u.name,
                                        shape_text(u.shape), e));
          continue;
        }
        if (d.shape != std::vector<uint64_t>{g.shape[1], g.shape[0]} || d.dtype != g.dtype) {
          errors_.push_back(fmt::format("{}: down {} {} of expert {} does not match its gate {}",
                                        block, d.name, shape_text(d.shape), e,
                                        shape_text(g.shape)));
          continue;
        }
        votes[signature(p)]++;
      }
      if (votes.size() > 1) {
        auto common = std::max_element(votes.begin(), votes.end(), [](auto& a, auto& b) {
          return a.second < b.second;
        });
        for (auto& [e, p] : experts) {
          if (e >= n || p.tensor[0] < 0 || p.tensor[1] < 0 || p.tensor[2] < 0) continue;
          std::string s = signature(p);
          if (votes.count(s) && s != common->first)
            errors_.push_back(fmt::format("{}: expert {} has {}, its siblings {}", block, e, s,
                                          common->first));
        }
      }
      auto r = routers.find(block);
      if (r != routers.end() && tensors_[r->second].shape[0] != static_cast<uint64_t>(n))
        errors_.push_back(fmt::format("{} {}: router has {} rows but the layer has {} experts",
                                      tensors_[r->second].name,
                                      shape_text(tensors_[r->second].shape),
                                      tensors_[r->second].shape[0], n));
    }
  }

  std::string rule_origin(const Module& m) const {
    return m.rule >= 0 ? options_.rules[m.rule].origin : std::string("the defaults");
  }

  // User rules in order, later wins. Each must match something; an include may only hit Linear
  // weights, and what ends up quantized must have K % 16 == 0.
  void apply_rules() {
    // Names of tensors that are not modules (norms, biases, ...), matched by their module name.
    std::vector<size_t> non_modules;
    for (size_t i = 0; i < tensors_.size(); ++i)
      if (module_of_tensor_[i].empty() && !fused_ok_.count(i)) non_modules.push_back(i);

    for (size_t ri = 0; ri < options_.rules.size(); ++ri) {
      const Rule& r = options_.rules[ri];
      const bool include = r.kind == Rule::Kind::Include;
      const std::string what = fmt::format("rule {} ({} {})", r.origin,
                                           include ? "include" : "exclude", r.glob);
      size_t hits = 0;
      for (Module& m : modules_) {
        // A fused tensor's name selects all of its per-expert modules.
        const bool fused_alias = m.source.expert >= 0 &&
                                 glob_match(r.glob, classes_[m.tensor].module);
        if (!fused_alias && !glob_match(r.glob, m.name)) continue;
        ++hits;
        m.quantize = include;
        m.rule = static_cast<int>(ri);
        m.reason = fmt::format("rule {}: {} {}", r.origin, include ? "include" : "exclude",
                               r.glob);
      }
      std::vector<std::string> not_linear;
      for (size_t i : non_modules) {
        if (!glob_match(r.glob, classes_[i].module) && !glob_match(r.glob, tensors_[i].name))
          continue;
        ++hits;
        if (include)
          not_linear.push_back(fmt::format("{} {} ({})", tensors_[i].name,
                                           shape_text(tensors_[i].shape), classes_[i].rule));
      }
      if (hits == 0) errors_.push_back(what + " matches no module");
      if (!not_linear.empty()) {
        std::string list;
        for (const auto& s : not_linear) list += "\n      " + s;
        errors_.push_back(fmt::format("{} matches {} tensor(s) that are not Linear weights and "
                                      "cannot be quantized:{}",
                                      what, not_linear.size(), list));
      }
    }
    std::vector<std::string> bad;
    for (const Module& m : modules_) {
      if (!m.quantize) continue;
      const DType dt = m.mxfp4_scales.empty() ? tensors_[m.tensor].dtype : DType::F32;
      if (m.cols == 0 || m.rows == 0)
        bad.push_back(fmt::format("{} [{},{}]: empty (wanted by {})", m.name, m.rows, m.cols,
                                  rule_origin(m)));
      else if (m.cols % options_.k_multiple != 0)
        bad.push_back(fmt::format("{} [{},{}]: K={} not a multiple of {}{} (wanted by {})",
                                  m.name, m.rows, m.cols, m.cols, options_.k_multiple,
                                  options_.k_multiple_why, rule_origin(m)));
      else if (!dtype_is_float(dt))
        bad.push_back(fmt::format("{}: source dtype {} (wanted by {})", m.name, dtype_name(dt),
                                  rule_origin(m)));
    }
    if (!bad.empty()) {
      std::string list;
      for (const auto& s : bad) list += "\n      " + s;
      errors_.push_back(fmt::format("{} tensor(s) the rules want quantized cannot be (exclude "
                                    "them explicitly):{}",
                                    bad.size(), list));
    }
  }

  // A fused 3-D tensor is split only when all its experts are quantized; keeping it means keeping
  // it whole (loaders accept fused experts in BF16 only, and a half-split tensor loads nowhere).
  void check_fused_consistency() {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& mods = module_of_tensor_[i];
      if (mods.size() < 2 || modules_[mods.front()].source.expert < 0) continue;
      std::vector<std::string> kept, quantized;
      for (size_t mi : mods) (modules_[mi].quantize ? quantized : kept).push_back(modules_[mi].name);
      if (!kept.empty() && !quantized.empty())
        errors_.push_back(fmt::format(
            "{}: the rules quantize {} of its per-expert modules (e.g. {}) and keep {} (e.g. {}); "
            "a fused 3-D tensor is either split and quantized whole or kept whole",
            tensors_[i].name, quantized.size(), quantized.front(), kept.size(), kept.front()));
    }
  }

  // FP8 sources: "<m>.weight_scale_inv" goes with "<m>.weight" (weight tensor -> scale tensor).
  std::unordered_map<std::string, size_t> find_scale_inv() const {
    std::unordered_map<std::string, size_t> scale_inv_of;
    static const std::string kSuffix = ".weight_scale_inv";
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const std::string& n = tensors_[i].name;
      if (n.size() > kSuffix.size() && n.compare(n.size() - kSuffix.size(), kSuffix.size(),
                                                 kSuffix) == 0) {
        std::string w = n.substr(0, n.size() - kSuffix.size()) + ".weight";
        if (by_name_.count(w)) scale_inv_of[w] = i;
      }
    }
    return scale_inv_of;
  }

  // Block size of FP8 block-scaled sources: config.json quantization_config.weight_block_size
  // (DeepSeek-V3, Kimi-K2 and Qwen3-FP8 all say [128, 128]), 128x128 when absent.
  std::array<uint64_t, 2> fp8_block_size() const {
    std::array<uint64_t, 2> b = {128, 128};
    const auto& raw = config_.raw;
    if (raw.is_object() && raw.contains("quantization_config") &&
        raw["quantization_config"].is_object()) {
      const auto& q = raw["quantization_config"];
      if (q.contains("weight_block_size") && q["weight_block_size"].is_array() &&
          q["weight_block_size"].size() == 2 && q["weight_block_size"][0].is_number_unsigned() &&
          q["weight_block_size"][1].is_number_unsigned()) {
        b[0] = q["weight_block_size"][0].get<uint64_t>();
        b[1] = q["weight_block_size"][1].get<uint64_t>();
      }
    }
    return b;
  }

  // An FP8 E4M3 weight is only meaningful with its block scales: without them (or with a grid of
  // the wrong shape) neither quantizing nor copying it would give the right values.
  void check_fp8_sources() {
    const auto scale_inv_of = find_scale_inv();
    const auto block = fp8_block_size();
    if (block[0] == 0 || block[1] == 0) {
      errors_.push_back("config.json quantization_config.weight_block_size has a zero entry");
      return;
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorMeta& t = tensors_[i];
      if (t.dtype != DType::F8_E4M3) continue;
      const bool is_weight = t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
      auto s = scale_inv_of.find(t.name);
      if (s == scale_inv_of.end()) {
        if (is_weight)
          errors_.push_back(fmt::format(
              "{} {}: F8_E4M3 weight without its block scale tensor {}_scale_inv (only FP8 with "
              "128x128 block scales, as DeepSeek-V3/Qwen3-FP8 ship it, can be read)",
              t.name, shape_text(t.shape), t.name));
        continue;
      }
      const TensorMeta& st = tensors_[s->second];
      if (t.shape.size() != 2) {
        errors_.push_back(fmt::format("{} {}: FP8 block-scaled tensors must be 2-D", t.name,
                                      shape_text(t.shape)));
        continue;
      }
      const std::vector<uint64_t> want = {(t.shape[0] + block[0] - 1) / block[0],
                                          (t.shape[1] + block[1] - 1) / block[1]};
      if (st.shape != want)
        errors_.push_back(fmt::format("{} {}: shape should be {} for the {} {} weight in {}x{} "
                                      "blocks",
                                      st.name, shape_text(st.shape), shape_text(want), t.name,
                                      shape_text(t.shape), block[0], block[1]));
      if (st.dtype != DType::F32 && st.dtype != DType::BF16)
        errors_.push_back(fmt::format("{}: dtype {}, expected F32 (or BF16) block scales",
                                      st.name, dtype_name(st.dtype)));
    }
  }

  // MXFP4 "*_blocks" + "*_scales" outside the BMM experts a table knows (an unknown family, a
  // renamed module): copying the codes under an NVFP4 config would give a checkpoint no loader
  // reads correctly, so refuse clearly.
  void check_mxfp4_leftovers() {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorMeta& t = tensors_[i];
      if (!t.name.ends_with(kBlocksSuffix) || t.dtype != DType::U8) continue;
      const std::string scales = t.name.substr(0, t.name.size() - kBlocksSuffix.size()) + "_scales";
      if (!by_name_.count(scales)) continue;
      const Role r = classes_[i].role;
      if (r == Role::BmmExpertGateUp || r == Role::BmmExpertDown) continue;
      errors_.push_back(fmt::format(
          "{} {} + {}: MXFP4 source outside the experts of a known family (family {}; fp4kit "
          "reads MXFP4 for gpt-oss experts); dequantize it to BF16 first (e.g. transformers "
          "Mxfp4Config(dequantize=True)) and quantize that",
          t.name, shape_text(t.shape), scales, family_->name));
    }
  }

  void lay_out_entries() {
    const auto scale_inv_of = find_scale_inv();
    std::set<size_t> scale_inv;
    for (const auto& [w, i] : scale_inv_of) scale_inv.insert(i);
    const auto fp8_block = fp8_block_size();
    std::set<std::string> mxfp4_scales;  // "<m>_scales" of BMM MXFP4 modules: absorbed
    for (const Module& m : modules_)
      if (!m.mxfp4_scales.empty()) mxfp4_scales.insert(m.mxfp4_scales);
    std::set<std::string> quantized_weights;
    for (const Module& m : modules_)
      if (m.quantize) quantized_weights.insert(tensors_[m.tensor].name);

    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorMeta& t = tensors_[i];
      const TensorClass& c = classes_[i];
      const auto& mods = module_of_tensor_[i];
      bool any_quantized = false;
      for (size_t mi : mods) any_quantized = any_quantized || modules_[mi].quantize;
      if (any_quantized) {
        for (size_t mi : mods) {
          const Module& m = modules_[mi];
          PlanEntry e;
          e.name = m.name;
          e.action = Action::Quantize;
          e.reason = m.reason;
          e.role = m.role;
          e.layer = c.layer;
          e.expert = m.expert;
          e.source = m.source;
          e.source_dtype = t.dtype;
          e.rows = m.rows;
          e.cols = m.cols;
          e.shape = t.shape;
          e.source_bytes = m.rows * m.cols * dtype_size(t.dtype);
          e.bmm_experts = m.bmm_experts;
          if (m.bmm_experts > 0) e.source_bytes = t.nbytes();
          if (!m.mxfp4_scales.empty()) {
            e.encoding = SourceEncoding::Mxfp4;
            e.source_scales = m.mxfp4_scales;
            e.reason += "; dequantized from MXFP4 (E8M0 scale per 32)";
          }
          mark_packed(t.name, e);
          if (auto s = scale_inv_of.find(t.name); s != scale_inv_of.end()) {
            e.source_scales = tensors_[s->second].name;
            if (t.dtype == DType::F8_E4M3) {
              e.encoding = SourceEncoding::Fp8Block;
              e.fp8_block = fp8_block;
              e.reason += fmt::format("; dequantized from FP8 ({}x{} block scales)",
                                      fp8_block[0], fp8_block[1]);
            }
          }
          entry_module_.push_back(mi);
          plan_.entries.push_back(std::move(e));
        }
        drop_packed_parts(t.name);
        continue;
      }
      PlanEntry e;
      e.name = t.name;
      e.role = c.role;
      e.layer = c.layer;
      e.expert = c.expert;
      e.source = {t.name, -1, 0, t.shape.empty() ? 0 : t.shape[0]};
      e.source_dtype = t.dtype;
      e.shape = t.shape;
      e.source_bytes = t.nbytes();
      if (t.shape.size() == 2) e.rows = t.shape[0], e.cols = t.shape[1];
      if (!mods.empty()) {
        e.reason = modules_[mods.front()].reason;
        e.expert = mods.size() == 1 ? modules_[mods.front()].expert : -1;
        const Module& m = modules_[mods.front()];
        if (!m.mxfp4_scales.empty()) {
          // A kept MXFP4 expert tensor: written as BF16 [E, K, N] under its BMM name, never as
          // raw codes under an NVFP4 label.
          e.name = m.name;
          e.action = Action::Dequantize;
          e.encoding = SourceEncoding::Mxfp4;
          e.source_scales = m.mxfp4_scales;
          e.bmm_experts = m.bmm_experts;
          e.rows = m.rows;
          e.cols = m.cols;
          e.reason += "; MXFP4 source written dequantized as BF16 [E, K, N]";
        } else if (packed_.count(t.name)) {
          // A kept pack-quantized Linear (a rule excluded it): BF16 under "<m>.weight", never the
          // integers without their scales.
          e.action = Action::Dequantize;
          mark_packed(t.name, e);
          e.reason += "; written dequantized as BF16";
        }
      } else if (mxfp4_scales.count(t.name)) {
        e.action = Action::Drop;
        e.reason = "MXFP4 E8M0 scales (_scales): absorbed by dequantization";
      } else if (scale_inv.count(i)) {
        std::string w = t.name.substr(0, t.name.size() - 17) + ".weight";
        if (quantized_weights.count(w) || tensors_[by_name_.at(w)].dtype == DType::F8_E4M3) {
          // Both a quantized FP8 weight and a kept one (written as BF16) absorb their scales.
          e.action = Action::Drop;
          e.reason = "FP8 block scale (weight_scale_inv): absorbed by dequantization";
        } else {
          e.reason = "FP8 block scale of the kept " + w;
        }
      } else {
        e.reason = keep_reason(c);
      }
      // A kept FP8 block-scaled tensor (MTP layer, router, K % 16, excluded by a rule) is written
      // dequantized to BF16: raw FP8 codes without their scale would load as wrong values.
      if (e.action == Action::Keep && t.dtype == DType::F8_E4M3) {
        if (auto s = scale_inv_of.find(t.name); s != scale_inv_of.end()) {
          e.action = Action::Dequantize;
          e.source_scales = tensors_[s->second].name;
          e.encoding = SourceEncoding::Fp8Block;
          e.fp8_block = fp8_block;
          e.reason += "; FP8 source written dequantized as BF16";
        }
      }
      entry_module_.push_back(mods.empty() ? SIZE_MAX : mods.front());
      plan_.entries.push_back(std::move(e));
      drop_packed_parts(t.name);
    }
    for (const auto& name : k16_kept_)
      warnings_.push_back(fmt::format("{}: K not a multiple of {}{}, kept unquantized", name,
                                      options_.k_multiple, options_.k_multiple_why));
  }

  // A pack-quantized source (folded "<m>.weight"): where its integers and scales are.
  void mark_packed(const std::string& weight, PlanEntry& e) const {
    auto it = packed_.find(weight);
    if (it == packed_.end()) return;
    const PackedIntWeight& w = it->second;
    e.encoding = SourceEncoding::PackedInt;
    e.source.tensor = w.packed;
    e.source_scales = w.scale;
    e.source_dtype = DType::I32;
    e.source_bytes = w.stored_bytes;
    e.int_bits = w.bits;
    e.int_group = w.group;
    e.rows = w.rows;
    e.cols = w.cols;
    e.shape = {w.rows, w.cols};
    e.reason += fmt::format("; dequantized from INT{} (compressed-tensors pack-quantized, {})",
                            w.bits, w.channel ? std::string("a scale per row")
                                              : fmt::format("a scale per {} columns", w.group));
  }

  // Its scale and shape tensors: absorbed by the decode, listed so every source tensor has a fate.
  void drop_packed_parts(const std::string& weight) {
    auto it = packed_.find(weight);
    if (it == packed_.end()) return;
    for (const TensorMeta* t : {&it->second.scale_meta, &it->second.shape_meta}) {
      PlanEntry d;
      d.name = t->name;
      d.action = Action::Drop;
      d.reason = std::string("pack-quantized ") +
                 (t == &it->second.scale_meta ? "weight_scale" : "weight_shape") +
                 ": absorbed by dequantization";
      d.source = {t->name, -1, 0, 0};
      d.source_dtype = t->dtype;
      d.shape = t->shape;
      d.source_bytes = t->nbytes();
      entry_module_.push_back(SIZE_MAX);
      plan_.entries.push_back(std::move(d));
    }
  }

  // Spec 3. Keys name the group; the same group may serve as weight group and input group.
  void make_groups() {
    std::map<std::string, int64_t> index;
    auto group = [&](const std::string& name, const std::string& why, const std::string& kind) {
      auto it = index.find(name);
      if (it != index.end()) return it->second;
      int64_t g = static_cast<int64_t>(plan_.groups.size());
      plan_.groups.push_back({name, why, {}, kind});
      index[name] = g;
      return g;
    };
    // Kept partners of fusion groups, for the warning below.
    std::map<std::string, std::vector<std::string>> kept_partners;

    for (size_t ei = 0; ei < plan_.entries.size(); ++ei) {
      PlanEntry& e = plan_.entries[ei];
      const size_t mi = entry_module_[ei];
      if (mi == SIZE_MAX) continue;
      const Module& m = modules_[mi];
      const TensorClass& c = classes_[m.tensor];
      const std::string parent = m.name.substr(0, m.name.rfind('.'));
      std::string both;  // weight+input group key
      switch (m.role) {
        case Role::AttnQ: case Role::AttnK: case Role::AttnV: case Role::MlaQA: case Role::MlaKVA:
          both = c.layer_prefix + "self_attn.qkv";
          break;
        case Role::MlpGate: case Role::MlpUp:
          both = parent + ".gate_up";
          break;
        case Role::LinearAttn:
          if (c.linear_attn == LinearAttnPart::InProj) both = parent + ".in_proj";
          break;
        default:
          break;
      }
      std::string wkey, ikey;
      if (m.role == Role::ExpertGate || m.role == Role::ExpertUp) {
        wkey = parent + ".gate_up";
        ikey = c.moe_block + ".experts.gate_up";
      } else if (m.role == Role::SharedGate || m.role == Role::SharedUp) {
        wkey = parent + ".gate_up";
        ikey = c.moe_block + ".experts.gate_up";
      } else if (m.role == Role::ExpertDown || m.role == Role::BmmExpertDown) {
        ikey = c.moe_block + ".experts.down";
      } else if (m.role == Role::BmmExpertGateUp) {
        // Its own input_scale: ModelOpt does not share it with Llama-4's shared expert (measured
        // against its GPU export, python/golden/models/llama4), and vLLM loads the two apart.
        ikey = m.name;
      }
      if (e.action != Action::Quantize) {
        if (!both.empty()) kept_partners[both].push_back(m.name);
        if (!wkey.empty()) kept_partners[wkey].push_back(m.name);
        continue;
      }
      if (!both.empty()) {
        e.weight_group = e.input_group =
            group(both, "read the same input, fused into one GEMM (spec 3)", "weight+input");
      } else {
        if (!wkey.empty())
          e.weight_group = group(wkey, "one expert's gate/up: one fused GEMM (spec 3)", "weight");
        if (!ikey.empty())
          e.input_group = group(ikey,
                                m.role == Role::ExpertDown || m.role == Role::BmmExpertDown
                                    ? "routed experts' down_proj: one input_scale per MoE layer "
                                      "(spec 3)"
                                    : "routed and shared experts' gate/up read the same tokens: "
                                      "one input_scale per MoE layer (spec 3)",
                                "input");
        else
          e.input_group = group(e.name, "reads its own input", "input");
      }
      plan_.groups[e.weight_group >= 0 ? e.weight_group : e.input_group].members.push_back(ei);
      if (e.weight_group >= 0 && e.input_group != e.weight_group)
        plan_.groups[e.input_group].members.push_back(ei);
    }
    // Name attention groups by what they hold (q/k/v, or DeepSeek's q_a + kv_a).
    for (auto& g : plan_.groups) {
      if (g.name.size() < 4 || g.name.compare(g.name.size() - 4, 4, ".qkv") != 0) continue;
      for (size_t ei : g.members)
        if (plan_.entries[ei].role == Role::MlaQA || plan_.entries[ei].role == Role::MlaKVA) {
          g.name = g.name.substr(0, g.name.size() - 4) + ".q_kv_a";
          break;
        }
    }
    for (auto& [key, kept] : kept_partners) {
      auto it = index.find(key);
      if (it == index.end()) continue;
      std::string q;
      for (size_t ei : plan_.groups[it->second].members) q += " " + plan_.entries[ei].name;
      std::string k;
      for (const auto& n : kept) k += " " + n;
      warnings_.push_back(fmt::format(
          "fusion group {}: quantized{} but kept{}; engines fuse these into one GEMM, expect a "
          "load failure",
          plan_.groups[it->second].name, q, k));
    }
  }

  // Checkpoint names of kept Linear-like modules a loader would otherwise quantize (spec 5), sorted.
  // Exact names, except one "<prefix>*" per vision subtree when that matches no quantized module.
  void make_exclude_list() {
    std::set<std::string> names;
    std::map<std::string, std::vector<std::string>> vision;  // subtree -> exact names
    bool has_lm_head = false;
    for (size_t ei = 0; ei < plan_.entries.size(); ++ei) {
      const PlanEntry& e = plan_.entries[ei];
      const size_t mi = entry_module_[ei];
      if (e.role == Role::LmHead) has_lm_head = true;
      if (e.action != Action::Keep && e.action != Action::Dequantize) continue;
      if (mi == SIZE_MAX) {
        const TensorClass& c = classes_[by_name_.at(e.name)];
        // A kept 2-D weight no rule recognised (GPT-2 Conv1D, unknown names): a loader may still
        // build it as a Linear, and listing a module that is not one is harmless.
        if (c.role == Role::Other && e.shape.size() == 2 && e.name.size() > 7 &&
            e.name.compare(e.name.size() - 7, 7, ".weight") == 0) {
          names.insert(c.module);
          continue;
        }
        // Embeddings: ModelOpt lists them (their quantizers are disabled too); loaders ignore
        // the entry, so listing them keeps both exclude lists equal.
        if (c.role == Role::Embedding) {
          names.insert(c.module);
          continue;
        }
        // conv1d of linear attention / Mamba mixers: vLLM builds it as a Linear, and ModelOpt
        // lists it.
        const std::string suffix = ".conv1d.weight";
        if (e.name.size() > suffix.size() &&
            e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0)
          names.insert(c.module);
        continue;
      }
      const TensorClass& c = classes_[modules_[mi].tensor];
      const std::string name = module_of_tensor_[modules_[mi].tensor].size() > 1
                                   ? c.module  // a fused 3-D tensor kept whole
                                   : modules_[mi].name;
      if (c.role == Role::Vision && !c.subtree.empty())
        vision[c.subtree].push_back(name);
      else
        names.insert(name);
    }
    if (!has_lm_head) names.insert("lm_head");  // tied embeddings: ModelOpt still lists it
    for (auto& [subtree, exact] : vision) {
      const std::string pattern = subtree + "*";
      bool hits_quantized = false;
      for (const PlanEntry& e : plan_.entries)
        if (e.action == Action::Quantize && glob_match(pattern, e.name)) hits_quantized = true;
      if (hits_quantized)
        names.insert(exact.begin(), exact.end());
      else
        names.insert(pattern);
    }
    // Kimi-K2.5 (kimi_k25): vLLM's KimiK25ForConditionalGeneration names the text model's
    // modules language_model.<...> and the head lm_head (its loader renames
    // language_model.model. / language_model.lm_head, and no name mapper reaches the exclude
    // list), so each kept text module is listed under both names; SGLang maps the checkpoint's.
    if (config_.outer_model_type == "kimi_k25") {
      const std::string model = "language_model.model.", head = "language_model.lm_head";
      std::set<std::string> aliases;
      for (const auto& n : names) {
        if (n.starts_with(model)) aliases.insert("language_model." + n.substr(model.size()));
        if (n == head) aliases.insert("lm_head");
      }
      names.insert(aliases.begin(), aliases.end());
    }
    plan_.exclude_modules.assign(names.begin(), names.end());
  }

  const std::vector<TensorMeta>& tensors_;
  const ModelConfig& config_;
  const PlanOptions& options_;
  const std::map<std::string, PackedIntWeight>& packed_;  // folded pack-quantized weights
  const ArchFamily* family_ = nullptr;
  std::vector<TensorClass> classes_;
  std::unordered_map<std::string, size_t> by_name_;
  std::vector<Module> modules_;
  std::vector<std::vector<size_t>> module_of_tensor_;
  std::set<size_t> fused_ok_;
  std::set<size_t> bmm_ok_;  // BMM expert tensors whose layout checked out
  std::vector<size_t> entry_module_;  // per entry: its module, SIZE_MAX for non-modules
  std::set<std::string> k16_kept_;
  std::vector<std::string> errors_;
  std::vector<std::string> warnings_;
  Plan plan_;
};

}  // namespace

Plan build_plan_from_tensors(const std::vector<TensorMeta>& tensors, const ModelConfig& config,
                             const PlanOptions& options, const SmallTensorValues& values) {
  const PackedSources p = fold_packed_int(tensors, config, values);
  return PlanBuilder(p.tensors, config, options, p.by_weight).build();
}

Plan build_plan(const Checkpoint& ckpt, const ModelConfig& config, const PlanOptions& options) {
  std::vector<TensorMeta> tensors;
  tensors.reserve(ckpt.tensor_names().size());
  for (const std::string& name : ckpt.tensor_names()) {
    const TensorInfo& info = ckpt.info(name);
    tensors.push_back({name, info.dtype, info.shape});
  }
  const SmallTensorValues values = [&ckpt](const std::string& name) {
    return small_int_values(ckpt, name);
  };
  try {
    check_layer_contents(fold_packed_int(tensors, config, values).tensors, config);
    return build_plan_from_tensors(tensors, config, options, values);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", ckpt.dir().string(), e.what()));
  }
}

}  // namespace fp4kit
