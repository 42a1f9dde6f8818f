#pragma once
// The mixture-of-experts block: post-attention norm, router (float32, never quantized), routed
// experts run over the tokens routed to them (one expert's weights decoded at a time, or one per
// thread side by side on a backend with concurrent ops), optional shared expert with an optional
// sigmoid gate, residual. Expert layouts (per-expert linears, fused 3-D tensors, BMM tensors)
// differ only in how an expert is loaded.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/blocks/mlp.hpp"
#include "fp4kit/engine/model_spec.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

struct MoeConfig {
  size_t hidden = 0;
  float eps = 1e-6f;
  bool norm_one_plus = false;  // the norm scales by 1 + weight (zero-centred norms)
  RouterOptions router;
  // Llama-4: each expert reads the token MULTIPLIED by its routing weight, and the expert outputs
  // are summed unweighted (the router's weights are sigmoid scores).
  bool scaled_input = false;
};

struct MoeWeights {
  Buffer norm;  // post_attention_layernorm [hidden]
  Linear router;  // [experts, hidden] (+ bias)
  Buffer selection_bias;  // SigmoidGroupTopk: e_score_correction_bias [experts], or empty
  std::vector<std::string> expert_names;  // routed-token counts are recorded under these
  std::function<GatedMlp(size_t expert)> load_expert;
  std::function<void()> release_experts;  // after the last expert (may be empty)
  // Every expert's linears carry the same module names (3-D BMM tensors): their statistics add
  // up across experts, so experts run one after the other (the order of those sums is fixed).
  bool shared_module_names = false;
  // The shared expert, loaded after the routed experts are done (one expert's weights at a time);
  // empty = none.
  std::function<GatedMlp()> load_shared;
  Linear shared_gate;  // [1, hidden]: output scaled by sigmoid(shared_gate x); empty w = no gate
};

class MoeBlock final : public Block {
 public:
  MoeBlock(const MoeConfig& cfg, MoeWeights w) : cfg_(cfg), w_(std::move(w)) {}
  void forward(const RunContext& ctx, float* hidden) override;

 private:
  MoeConfig cfg_;
  MoeWeights w_;
};

// On a backend with concurrent ops, experts run side by side and keep their outputs (top_k rows
// of `hidden` floats per token) until they are added in expert order: tokens go through the
// experts in rounds of max(chunk tokens, this many) tokens (512 MiB of outputs).
size_t moe_round_tokens(size_t top_k, size_t hidden);

// post_attention_layernorm + the layer's MoE (router, experts in the spec's layout, shared expert).
std::unique_ptr<Block> load_moe(const Checkpoint& ckpt, const ModelSpec& spec, const LayerSpec& L,
                                Backend& be, bool activations);

}  // namespace fp4kit::engine
