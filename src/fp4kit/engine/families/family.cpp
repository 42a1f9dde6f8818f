// Which blocks each family's layers hold.
#include "fp4kit/engine/families/family.hpp"

#include "fp4kit/engine/blocks/attention.hpp"
#include "fp4kit/engine/blocks/gated_delta_net.hpp"
#include "fp4kit/engine/blocks/mlp.hpp"
#include "fp4kit/engine/blocks/moe.hpp"
#include "fp4kit/io/checkpoint.hpp"

namespace fp4kit::engine {

std::vector<BlockLoader> decoder_layer_blocks(const Checkpoint& ckpt, const ModelSpec& S,
                                              const LayerSpec& L, Backend& be, bool act) {
  std::vector<BlockLoader> out;
  if (L.linear_attention)
    out.push_back([&ckpt, &S, &L, &be, act] { return load_gated_delta_net(ckpt, S, L, be, act); });
  else
    out.push_back([&ckpt, &S, &L, &be, act] { return load_attention(ckpt, S, L, be, act); });
  out.push_back(feed_forward_block(ckpt, S, L, be, act));
  return out;
}

FamilyDef::Roots language_model_roots(const Checkpoint& ckpt, const ModelSpec&) {
  if (!ckpt.has("model.embed_tokens.weight") &&
      ckpt.has("language_model.model.embed_tokens.weight"))
    return {"language_model.model.", "language_model."};
  return {};
}

BlockLoader feed_forward_block(const Checkpoint& ckpt, const ModelSpec& S, const LayerSpec& L,
                               Backend& be, bool act) {
  if (L.moe) return [&ckpt, &S, &L, &be, act] { return load_moe(ckpt, S, L, be, act); };
  return [&ckpt, &S, &L, &be, act] { return load_dense_mlp(ckpt, S, L, be, act); };
}

std::vector<BlockLoader> layer_blocks(const Checkpoint& ckpt, const ModelSpec& S, size_t layer,
                                      Backend& be, bool act) {
  const LayerSpec& L = S.layers.at(layer);
  const FamilyDef& def = family_def(S.family);
  return def.blocks ? def.blocks(ckpt, S, L, be, act) : decoder_layer_blocks(ckpt, S, L, be, act);
}

}  // namespace fp4kit::engine
