#pragma once
// What the engine needs to know about a checkpoint to run it: the family, the dimensions, and the
// tensor names of every part of every layer (per-expert, Mixtral-style or fused 3-D experts).
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/engine/rope.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

enum class Family { Llama, Mistral, Qwen2, Qwen3, Qwen2Moe, Qwen3Moe, Mixtral };

// A 2-D linear weight: a whole tensor, or a row range of a fused 3-D expert tensor viewed as
// [E * rows, cols]. `module` is the OUTPUT module name (per expert, fused experts split), used for
// statistics and for the quantized tensors' names (<module>.weight, .weight_scale, ...).
struct LinearRef {
  std::string module;
  std::string tensor;      // empty: the usual <module>.weight (or NVFP4 tensors of <module>)
  uint64_t row_begin = 0;  // fused 3-D experts only
  uint64_t rows = 0;
  uint64_t cols = 0;
};

struct ExpertRef {
  std::string prefix;  // model.layers.L.mlp.experts.E (for routed_tokens)
  LinearRef gate, up, down;
};

struct LayerSpec {
  std::string prefix;  // model.layers.L.
  LinearRef q, k, v, o;
  bool qk_norm = false;
  bool moe = false;
  // dense MLP (moe == false)
  LinearRef gate, up, down;
  // MoE
  std::string router;  // module of the router linear (kept in high precision)
  std::vector<ExpertRef> experts;
  bool has_shared_expert = false;
  LinearRef shared_gate, shared_up, shared_down;
  std::string shared_expert_gate;  // module of the [1, hidden] sigmoid gate
  int sliding_window = 0;          // 0 = full causal attention
};

struct ModelSpec {
  Family family = Family::Llama;
  std::string model_type;
  int64_t hidden = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, vocab = 0;
  int64_t n_experts = 0, top_k = 0;
  bool norm_topk = false;  // renormalise the top-k routing weights (always for Mixtral)
  float eps = 1e-6f;
  RopeParams rope;
  std::string embed;    // model.embed_tokens.weight
  std::string final_norm;
  LinearRef lm_head;    // module "lm_head" or the embedding when tied
  std::vector<LayerSpec> layers;

  // Reads config.json and the tensor names. Throws fp4kit::Error for an unsupported family or
  // missing tensors (naming the checkpoint and tensor).
  static ModelSpec from_checkpoint(const Checkpoint& ckpt);
};

const char* family_name(Family f);

}  // namespace fp4kit::engine
