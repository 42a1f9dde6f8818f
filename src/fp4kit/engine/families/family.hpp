#pragma once
// A family = its spec table (which config fields and tensors make up each layer) and the blocks
// of each of its layers, read from its ModelSpec. One file per family (or per group of families
// sharing a layer) in this folder, listed in registry.cpp. A family's file ends in the function
// registry.cpp calls, returning its FamilyDef with designated initializers, e.g.
//   FamilyDef olmoe_family() {
//     return {.id = Family::Olmoe, .name = "olmoe", .model_types = {"olmoe"}, .moe = true,
//             .configure = configure, .layer = layer};
//   }
// (fields in declaration order; what is left out keeps its default). The shared readers of
// config.json and tensor names are spec_util.hpp's. The layer loop (run.cpp) builds each
// block when its turn comes (its weights uploaded then, dropped after it ran), so memory holds one
// block's weights at a time.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/model_spec.hpp"

namespace fp4kit {
class Checkpoint;
struct ModelConfig;
}

namespace fp4kit::engine {

using BlockLoader = std::function<std::unique_ptr<Block>()>;

struct FamilyDef {
  Family id;
  const char* name;
  std::vector<std::string> model_types;  // config.json model_type values (of the text model)
  bool text_config = false;  // a multimodal wrapper (text_config) whose text part is run
  bool moe = false;          // needs 0 < num_experts_per_tok <= num_experts
  // Multi-head latent attention (DeepSeek): the heads' widths are the family's own config fields
  // (configure sets head_dim), so head_dim / hidden_size / num_attention_heads and
  // num_key_value_heads are not checked as for standard attention.
  bool own_head_dims = false;
  // The family's part of the spec once the common dimensions are read: RoPE, routing, MoE
  // settings and defaults config.json may leave out.
  void (*configure)(const Checkpoint&, const ModelConfig&, ModelSpec&) = nullptr;
  // Where the text model lives: `model` prefixes embed_tokens, layers.N. and norm ("model." by
  // default; "language_model.model." or "model.language_model." in wrappers), `head` prefixes
  // lm_head ("" by default). Null = the defaults.
  struct Roots {
    std::string model = "model.", head;
  };
  Roots (*roots)(const Checkpoint&, const ModelSpec&) = nullptr;
  // Layer `l`'s tensors and flavours (L.prefix already set).
  void (*layer)(const Checkpoint&, const ModelConfig&, ModelSpec&, int64_t l, LayerSpec& L) = nullptr;
  // The layer's blocks; null = decoder_layer_blocks.
  std::vector<BlockLoader> (*blocks)(const Checkpoint&, const ModelSpec&, const LayerSpec&,
                                     Backend&, bool activations) = nullptr;
};

// The family answering to `model_type`, or null.
const FamilyDef* find_family(const std::string& model_type);
const FamilyDef& family_def(Family id);
// Every model_type the engine answers to ("llama, mistral, ...") for error messages.
std::string supported_model_types();

// The roots of wrappers keeping the text model under `language_model.model.` and the head as
// `language_model.lm_head` (Llama-4's Llama4ForConditionalGeneration, Kimi-K2.5's
// KimiK25ForConditionalGeneration); the defaults when the checkpoint has model.embed_tokens.
FamilyDef::Roots language_model_roots(const Checkpoint& ckpt, const ModelSpec& spec);

// The blocks of layer `layer`, in order (`activations`: honour W4A4 input scales).
std::vector<BlockLoader> layer_blocks(const Checkpoint& ckpt, const ModelSpec& spec, size_t layer,
                                      Backend& be, bool activations);

// The layer's feed-forward block: the MoE when L.moe, else the dense MLP.
BlockLoader feed_forward_block(const Checkpoint& ckpt, const ModelSpec& spec, const LayerSpec& L,
                               Backend& be, bool activations);

// The usual decoder layer: attention (or a Gated DeltaNet on linear-attention layers), then the
// dense MLP or the MoE the layer spec names.
std::vector<BlockLoader> decoder_layer_blocks(const Checkpoint& ckpt, const ModelSpec& spec,
                                              const LayerSpec& L, Backend& be, bool activations);

}  // namespace fp4kit::engine
