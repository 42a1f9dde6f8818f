// OLMoE (transformers' olmoe): attention whose q_norm / k_norm span the whole q / k projection
// (all heads jointly) before RoPE; every layer an MoE with the softmax top-k router
// (norm_topk_prob, default false) and no shared expert. clip_qkv is refused (not implemented).
#include <fmt/format.h>

#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/engine/families/spec_util.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit::engine {
namespace {

void configure(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s) {
  const nlohmann::json& text = cfg.text;
  const std::string label = (ckpt.dir() / "config.json").string();
  if (!text.contains("rms_norm_eps")) s.eps = 1e-5f;
  auto clip = text.find("clip_qkv");
  if (clip != text.end() && !clip->is_null())
    throw Error(fmt::format("{}: clip_qkv is set; the engine does not implement OLMoE's q/k/v "
                            "clamping", label));
  s.rope = RopeParams::from_config(text, cfg.rope_theta, static_cast<int>(s.head_dim), label);
  s.routing = Routing::SoftmaxTopk;
}

void layer(const Checkpoint& ckpt, const ModelConfig&, ModelSpec& s, int64_t l, LayerSpec& L) {
  standard_attention(ckpt, s, l, L);
  L.qk_norm_whole = true;
  standard_moe(ckpt, s, L.prefix + "mlp.", false, L);
}

}  // namespace

const FamilyDef& olmoe_family() {
  static const FamilyDef d = [] {
    FamilyDef f{Family::Olmoe, "olmoe", {"olmoe"}};
    f.moe = true;
    f.configure = configure;
    f.layer = layer;
    return f;
  }();
  return d;
}

}  // namespace fp4kit::engine
