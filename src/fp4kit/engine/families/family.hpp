#pragma once
// A family = the blocks of each of its layers, read from its ModelSpec. The layer loop (run.cpp)
// builds each block when its turn comes (its weights uploaded then, dropped after it ran), so
// memory holds one block's weights at a time.
#include <functional>
#include <memory>
#include <vector>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/model_spec.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

using BlockLoader = std::function<std::unique_ptr<Block>()>;

// The blocks of layer `layer`, in order (`activations`: honour W4A4 input scales).
std::vector<BlockLoader> layer_blocks(const Checkpoint& ckpt, const ModelSpec& spec, size_t layer,
                                      Backend& be, bool activations);

// The decoder layer of llama, mistral, qwen2/3, qwen2/3-MoE, mixtral, gpt-oss and llama4:
// attention, then the dense MLP or the MoE the layer spec names.
std::vector<BlockLoader> decoder_layer_blocks(const Checkpoint& ckpt, const ModelSpec& spec,
                                              const LayerSpec& L, Backend& be, bool activations);

}  // namespace fp4kit::engine
