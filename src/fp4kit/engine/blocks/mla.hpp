#pragma once
// DeepSeek-V2/V3 multi-head latent attention (transformers' DeepseekV3Attention): input norm;
// queries from q_proj, or through the q-LoRA (q_a_proj, q_a_layernorm, q_b_proj); the compressed
// latent and the shared RoPE key from kv_a_proj_with_mqa, the latent normed (kv_a_layernorm) and
// expanded by kv_b_proj into per-head no-RoPE keys and values; RoPE on the last qk_rope dims of
// each query and on the shared key (interleaved pairs or rotate_half); causal attention with q/k
// heads of qk_nope + qk_rope and value heads of v; o_proj; residual.
#include <memory>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/model_spec.hpp"
#include "fp4kit/engine/rope.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

struct MlaConfig {
  size_t hidden = 0;
  int n_heads = 0;
  int q_lora_rank = 0;  // 0: q_proj
  int kv_lora_rank = 0, qk_nope = 0, qk_rope = 0, v_dim = 0;
  float eps = 1e-6f;         // input_layernorm
  float latent_eps = 1e-6f;  // q_a_layernorm / kv_a_layernorm (built without eps: 1e-6)
  RopeStyle rope_style = RopeStyle::Interleaved;  // rope_interleave
  RopeParams rope_params;                         // rotary_dim = qk_rope
  float scale = 0.0f;                             // softmax scale
};

struct MlaWeights {
  Buffer norm;      // input_layernorm [hidden]
  Linear q_a;       // q_a_proj [q_lora_rank, hidden] (q-LoRA only)
  Buffer q_a_norm;  // [q_lora_rank]
  Linear q;         // q_b_proj [nh * (nope + rope), q_lora_rank], or q_proj [.., hidden]
  Linear kv_a;      // kv_a_proj_with_mqa [kv_lora_rank + rope, hidden]
  Buffer kv_a_norm;  // [kv_lora_rank]
  Linear kv_b;      // [nh * (nope + v), kv_lora_rank]
  Linear o;         // [hidden, nh * v]
};

class MlaBlock final : public Block {
 public:
  MlaBlock(const MlaConfig& cfg, MlaWeights w);
  void forward(const RunContext& ctx, float* hidden) override;

 private:
  MlaConfig cfg_;
  MlaWeights w_;
  Rope rope_;
  Buffer normed_, qa_, q_, ckv_, c_, kv_, k_, v_, att_, out_;
};

// The MLA of layer L (input_layernorm + self_attn.*) as the spec names it.
std::unique_ptr<Block> load_mla(const Checkpoint& ckpt, const ModelSpec& spec, const LayerSpec& L,
                                Backend& be, bool activations);

}  // namespace fp4kit::engine
