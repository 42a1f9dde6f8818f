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
  default_eps(cfg, s, 1e-5f);
  auto clip = cfg.text.find("clip_qkv");
  if (clip != cfg.text.end() && !clip->is_null())
    throw Error(fmt::format("{}: clip_qkv is set; the engine does not implement OLMoE's q/k/v "
                            "clamping", config_label(ckpt)));
  config_rope(ckpt, cfg, s);
  s.routing = Routing::SoftmaxTopk;
}

void layer(const Checkpoint& ckpt, const ModelConfig&, ModelSpec& s, int64_t l, LayerSpec& L) {
  standard_attention(ckpt, s, l, L);
  L.qk_norm_whole = true;
  standard_moe(ckpt, s, L.prefix + "mlp.", false, L);
}

}  // namespace

FamilyDef olmoe_family() {
  return {.id = Family::Olmoe, .name = "olmoe", .model_types = {"olmoe"}, .moe = true,
          .configure = configure, .layer = layer};
}

}  // namespace fp4kit::engine
