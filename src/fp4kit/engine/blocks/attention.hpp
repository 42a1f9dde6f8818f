#pragma once
// Causal self-attention block: input norm, q/k/v projections, optional per-head q/k RMSNorm
// (Qwen3; zero-centred in Qwen3-Next/3.5) before RoPE (full or partial), RoPE (rotate_half or interleaved) or NoPE with Llama-4's query
// temperature, optional weightless L2 q/k norm after RoPE (Llama-4), grouped-query attention with
// sinks / sliding window / chunks, optional sigmoid output gate, o_proj, residual.
#include <memory>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/model_spec.hpp"
#include "fp4kit/engine/rope.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

struct AttentionConfig {
  size_t hidden = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float eps = 1e-6f;
  bool qk_norm = false;     // per-head RMSNorm of q and k with weights, before RoPE
  bool qk_norm_whole = false;  // with qk_norm: over the whole projection (OLMoE), not per head
  bool l2_qk_norm = false;  // per-head RMSNorm without weight, after RoPE
  bool rope = true;         // false: NoPE layer
  RopeStyle rope_style = RopeStyle::Half;
  RopeParams rope_params;
  bool temperature = false;  // NoPE layers: Llama-4 query temperature
  float floor_scale = 8192.0f, attn_scale = 0.1f;
  int window = 0, chunk = 0;
  bool norm_one_plus = false;  // input and q/k norms scale by 1 + weight (Qwen3-Next, Qwen3.5)
  bool output_gate = false;    // o_proj reads o * sigmoid(q_gate x) (Qwen3-Next, Qwen3.5)
};

struct AttentionWeights {
  Buffer norm;  // input_layernorm [hidden]
  Linear q, k, v, o;
  Linear q_gate;  // output_gate: the gate half of q_proj, [n_heads * head_dim, hidden]
  Buffer q_norm, k_norm;  // [head_dim] when qk_norm ([heads * head_dim] when qk_norm_whole)
  Buffer sinks;           // [n_heads] or empty
};

class AttentionBlock final : public Block {
 public:
  AttentionBlock(const AttentionConfig& cfg, AttentionWeights w);
  void forward(const RunContext& ctx, float* hidden) override;

 private:
  AttentionConfig cfg_;
  AttentionWeights w_;
  Rope rope_;
  Buffer normed_, q_, k_, v_, att_, out_, gate_;
};

// The attention of layer L as the spec names it (input_layernorm + self_attn.*).
std::unique_ptr<Block> load_attention(const Checkpoint& ckpt, const ModelSpec& spec,
                                      const LayerSpec& L, Backend& be, bool activations);

}  // namespace fp4kit::engine
