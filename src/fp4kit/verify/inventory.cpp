#include "fp4kit/verify/inventory.hpp"

#include <map>
#include <string_view>

namespace fp4kit::verify {
namespace {

// Suffixes that attach a tensor to its module.
constexpr std::string_view kSuffixes[] = {
    "weight",       "weight_scale", "weight_scale_2",  "input_scale",
    "weight_packed", "weight_global_scale", "input_global_scale",
    "bias",         "k_scale",      "v_scale",         "weight_shape", "weight_zero_point",
    "e_score_correction_bias"};

bool is_suffix(std::string_view s) {
  for (auto k : kSuffixes)
    if (k == s) return true;
  return false;
}

}  // namespace

uint64_t ModuleTensors::rows() const {
  if (!weight || weight->shape.size() < 2) return 0;
  return weight->shape[weight->shape.size() - 2];
}

uint64_t ModuleTensors::cols() const {
  if (!weight || weight->shape.size() < 2) return 0;
  const uint64_t c = weight->shape.back();
  return quantized ? 2 * c : c;
}

uint64_t ModuleTensors::params() const {
  if (!weight) return 0;
  uint64_t n = 1;
  for (auto d : weight->shape) n *= d;
  return quantized ? 2 * n : n;
}

std::vector<ModuleTensors> build_inventory(const Checkpoint& ckpt, const DeclaredQuant& declared,
                                           const NameContext& ctx) {
  const bool ct = declared.format == QuantFormat::CompressedTensors;
  std::map<std::string, ModuleTensors> by_name;
  for (const auto& name : ckpt.tensor_names()) {
    const TensorInfo& info = ckpt.info(name);
    std::string_view suffix = last_of(name);
    std::string module(parent_of(name));
    // ModelOpt's BMM expert layout (gpt-oss, Llama-4; spec section 4) joins with '_':
    // "<experts>.gate_up_proj_weight_scale" belongs to "<experts>.gate_up_proj".
    bool bmm_part = false;
    if (!is_suffix(suffix)) {
      // gpt-oss also writes "<experts>.gate_up_proj_bias" next to the BMM weight.
      for (std::string_view s : {"weight_scale_2", "weight_scale", "input_scale", "bias"}) {
        const std::string tail = "_" + std::string(s);
        if (name.size() <= tail.size() || !name.ends_with(tail)) continue;
        const std::string_view base = std::string_view(name).substr(0, name.size() - tail.size());
        // (next to an MXFP4 "<m>_blocks" too, so a leftover pair does not orphan its bias)
        std::string blocks(base);
        blocks.append("_blocks");
        if (ckpt.has(base) || (s == "bias" && ckpt.has(blocks))) {
          module = name.substr(0, name.size() - tail.size());
          suffix = s;
          bmm_part = true;
          break;
        }
      }
    }
    if (!bmm_part && (module.empty() || !is_suffix(suffix))) {
      module = name;  // suffix-less tensor: the module's weight itself (fused 3-D experts, ...)
      suffix = "";
    }
    ModuleTensors& m = by_name[module];
    m.name = module;
    // gpt-oss's MXFP4 pair: "<m>_blocks" U8 [..., G, 16] + "<m>_scales" U8 [..., G].
    if (const std::string base = mxfp4_base_name(name); !base.empty() && info.dtype == DType::U8) {
      const bool blocks = name.ends_with("_blocks");
      const std::string other = base + (blocks ? "_scales" : "_blocks");
      if (ckpt.has(other) && ckpt.info(other).dtype == DType::U8 &&
          (blocks ? info.shape.size() >= 2 && info.shape.back() == 16 : info.shape.size() >= 1)) {
        m.weight = &info;
        m.mxfp4 = true;
        continue;
      }
    }
    const bool packed_u8 = info.dtype == DType::U8;
    if (suffix == "weight" || suffix.empty()) {
      if (ct) {
        if (m.weight && m.quantized) m.unpacked_weight = &info;
        else m.weight = &info;
      } else {
        m.weight = &info;
        m.quantized = packed_u8;
      }
    } else if (suffix == "weight_packed") {
      if (ct) {
        if (m.weight) m.unpacked_weight = m.weight;
        m.weight = &info;
        m.quantized = true;
      } else {
        m.foreign.push_back(&info);
      }
    } else if (suffix == "weight_scale") {
      m.weight_scale = &info;
    } else if (suffix == "weight_scale_2") {
      if (ct) m.foreign.push_back(&info); else m.global_scale = &info;
    } else if (suffix == "input_scale") {
      if (ct) m.foreign.push_back(&info); else m.input_scale = &info;
    } else if (suffix == "weight_global_scale") {
      if (ct) m.global_scale = &info; else m.foreign.push_back(&info);
    } else if (suffix == "input_global_scale") {
      if (ct) m.input_scale = &info; else m.foreign.push_back(&info);
    } else {
      m.others.push_back(&info);
    }
  }
  std::vector<ModuleTensors> out;
  out.reserve(by_name.size());
  for (auto& [name, m] : by_name) {
    const int dims = m.weight ? static_cast<int>(m.weight->shape.size()) : 0;
    m.role = classify_module(name, dims, ctx);
    m.exclude_pattern = declared.exclusions.match(name);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace fp4kit::verify
