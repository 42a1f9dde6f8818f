// Tensor classification. Order matters: vision/audio and MTP parts are recognised first (they
// contain names such as q_proj that would otherwise look like language-model linears), then the
// decoder layers through the family table, then family-independent names.
#include "fp4kit/model/classify.hpp"

#include <fmt/format.h>

#include <array>
#include <string_view>

namespace fp4kit {
namespace {

std::vector<std::string_view> split_dots(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    if (dot == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, dot - start));
    start = dot + 1;
  }
}

bool is_number(std::string_view s) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

int64_t to_int(std::string_view s) {
  int64_t v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

bool contains(std::string_view s, std::string_view part) { return s.find(part) != s.npos; }
bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Segments that start a vision / audio / multimodal-projector subtree.
bool is_vision_segment(std::string_view s) {
  static constexpr std::array<std::string_view, 9> kPrefixes = {
      "visual", "vision", "multi_modal_projector", "mm_projector", "audio", "image_newline",
      "speech", "video", "siglip"};
  for (std::string_view p : kPrefixes)
    if (starts_with(s, p)) return true;
  return false;
}

bool is_norm_segment(std::string_view s) {
  return contains(s, "norm") || s == "ln_f" || starts_with(s, "ln_");
}

// Matches a table pattern against the in-layer segments; captures {E}.
bool match_pattern(std::string_view pattern, const std::vector<std::string_view>& segs,
                   size_t first, int64_t* expert) {
  std::vector<std::string_view> p = split_dots(pattern);
  if (p.size() != segs.size() - first) return false;
  int64_t e = -1;
  for (size_t i = 0; i < p.size(); ++i) {
    std::string_view s = segs[first + i];
    if (p[i] == "{E}") {
      if (!is_number(s)) return false;
      e = to_int(s);
    } else if (p[i] != s) {
      return false;
    }
  }
  *expert = e;
  return true;
}

std::string join(const std::vector<std::string_view>& segs, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    if (i > begin) out += '.';
    out += segs[i];
  }
  return out;
}

bool is_linear_role(Role r) {
  switch (r) {
    case Role::Norm: case Role::Embedding: case Role::Bias: case Role::RouterBias:
    case Role::Other:
      return false;
    default:
      return true;
  }
}

}  // namespace

bool looks_like_linear_name(const std::string& last) {
  static constexpr std::array<std::string_view, 16> kNames = {
      "fc1", "fc2", "w1", "w2", "w3", "wq", "wk", "wv", "wo", "dense", "query", "key", "value",
      "query_key_value", "dense_h_to_4h", "dense_4h_to_h"};
  std::string_view s = last;
  if (s.size() > 5 && s.substr(s.size() - 5) == "_proj") return true;
  for (std::string_view n : kNames)
    if (s == n) return true;
  return false;
}

TensorClass TensorClassifier::classify(const TensorMeta& t) const {
  TensorClass c;
  const std::vector<std::string_view> segs = split_dots(t.name);
  const bool ends_weight = segs.size() > 1 && segs.back() == "weight";
  c.module = ends_weight ? t.name.substr(0, t.name.size() - 7) : t.name;
  const std::string_view module_last = ends_weight ? segs[segs.size() - 2] : segs.back();
  const bool plain_2d_weight = ends_weight && t.shape.size() == 2;
  // A 2-D weight that is not an embedding or a norm: a Linear, whatever subtree it is in.
  const bool linear_shaped =
      plain_2d_weight && !contains(module_last, "embed") && !is_norm_segment(module_last);

  // Layer index: "<prefix>layers.<L>." (also "h.<L>." / "blocks.<L>." of other conventions).
  size_t layer_seg = segs.size();
  for (size_t i = 0; i + 1 < segs.size(); ++i) {
    if ((segs[i] == "layers" || segs[i] == "h" || segs[i] == "blocks") && is_number(segs[i + 1])) {
      layer_seg = i;
      break;
    }
  }
  if (layer_seg < segs.size()) {
    c.layer = to_int(segs[layer_seg + 1]);
    c.layer_prefix = join(segs, 0, layer_seg + 2) + ".";
  }

  // Vision towers and "mtp.*" number their own blocks: those indices are not decoder layers.
  auto leave_the_layers = [&c]() {
    c.layer = -1;
    c.layer_prefix.clear();
  };
  for (size_t i = 0; i < segs.size(); ++i) {
    if (is_vision_segment(segs[i])) {
      leave_the_layers();
      c.role = Role::Vision;
      c.rule = fmt::format("vision/audio part ('{}')", segs[i]);
      c.subtree = join(segs, 0, i + 1);
      c.linear_weight = linear_shaped;
      return c;
    }
    if (segs[i] == "mtp") {
      leave_the_layers();
      c.role = Role::Mtp;
      c.rule = "multi-token-prediction part ('mtp')";
      c.subtree = join(segs, 0, i + 1);
      c.linear_weight = linear_shaped;
      return c;
    }
  }
  // DeepSeek-V3 / GLM-4-MoE store their MTP layers as layers.<num_hidden_layers + i>: not part of
  // the model's forward pass, and loaders build them separately.
  if (c.layer >= 0 && config_.num_hidden_layers > 0 && c.layer >= config_.num_hidden_layers) {
    c.role = Role::Mtp;
    c.rule = fmt::format("layer {} >= num_hidden_layers {} (MTP layer)", c.layer,
                         config_.num_hidden_layers);
    c.linear_weight = linear_shaped;
    return c;
  }

  if (c.layer >= 0) {
    const size_t first = layer_seg + 2;
    for (const auto& table : family_.tables) {
      for (const LayerPattern& p : table) {
        int64_t expert = -1;
        if (!match_pattern(p.pattern, segs, first, &expert)) continue;
        c.role = p.role;
        c.expert = expert;
        c.linear_attn = p.linear_attn;
        c.in_table = true;
        c.rule = fmt::format("{} table: {}", family_.name, p.pattern);
        switch (p.role) {
          case Role::ExpertGate: case Role::ExpertUp: case Role::ExpertDown:
          case Role::FusedExpertGateUp: case Role::FusedExpertDown:
          case Role::BmmExpertGateUp: case Role::BmmExpertDown:
          case Role::SharedGate: case Role::SharedUp: case Role::SharedDown:
          case Role::SharedExpertGate: case Role::Router: case Role::RouterBias:
            c.moe_block = c.layer_prefix + std::string(segs[first]);
            break;
          default:
            break;
        }
        if (p.role == Role::FusedExpertGateUp || p.role == Role::FusedExpertDown)
          c.linear_weight = t.shape.size() == 3;
        else if (p.role == Role::BmmExpertGateUp || p.role == Role::BmmExpertDown)
          c.linear_weight = t.shape.size() == 3 ||  // BF16 [E, K, N]
                            (t.shape.size() == 4 && t.dtype == DType::U8);  // MXFP4 blocks
        else
          c.linear_weight = is_linear_role(p.role) && plain_2d_weight;
        return c;
      }
    }
  }

  // Family-independent names.
  if (segs.back() == "bias") {
    c.role = Role::Bias;
    c.rule = "bias";
  } else if (is_norm_segment(module_last)) {
    c.role = Role::Norm;
    c.rule = "norm";
  } else if (c.layer < 0 && (contains(module_last, "embed") || module_last == "wte")) {
    c.role = Role::Embedding;
    c.rule = "embedding";
  } else if (c.layer < 0 && (module_last == "lm_head" || module_last == "output_layer" ||
                             t.name == "output.weight")) {
    c.role = Role::LmHead;
    c.rule = "lm_head";
    c.linear_weight = plain_2d_weight;
  } else if (module_last == "router" && plain_2d_weight) {
    c.role = Role::Router;
    c.rule = "router (by name)";
    c.moe_block = c.layer_prefix + (segs.size() > 2 ? std::string(segs[segs.size() - 3]) : "");
    c.linear_weight = true;
  } else if (linear_shaped && looks_like_linear_name(std::string(module_last))) {
    c.role = Role::OtherLinear;
    c.rule = fmt::format("2-D weight named '{}' (Linear by name and shape)", module_last);
    c.linear_weight = true;
  } else {
    c.role = Role::Other;
    c.rule = "not a Linear weight";
  }
  return c;
}

}  // namespace fp4kit
