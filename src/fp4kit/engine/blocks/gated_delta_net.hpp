#pragma once
// The Gated DeltaNet block (Qwen3-Next, Qwen3.5 linear-attention layers): input norm; the input
// projections to q|k|v (conv channels), z, b, a; the causal short convolution + SiLU over q|k|v;
// beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias); the gated delta rule with L2-normalised
// q/k; the gated RMSNorm rmsnorm(core) * w * silu(z) per value head; out_proj; residual.
#include <memory>
#include <string>
#include <vector>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/model_spec.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

struct GdnConfig {
  size_t hidden = 0;
  float eps = 1e-6f;
  bool norm_one_plus = false;  // the input norm scales by 1 + weight
  int nk = 0, nv = 0, dk = 0, dv = 0, kernel = 4;
  bool chunked = true;  // the chunk-64 form of the delta rule (transformers' prefill), else recurrent
};

struct GdnWeights {
  Buffer norm;              // input_layernorm [hidden]
  Linear qkv, z, b, a;      // [2 nk dk + nv dv, H], [nv dv, H], [nv, H], [nv, H]
  std::vector<std::string> in_modules;  // the distinct modules reading the normed input
  Buffer conv;              // [2 nk dk + nv dv, kernel]
  Buffer A_log, dt_bias;    // [nv]
  Buffer gate_norm;         // [dv]
  Linear out;               // [H, nv dv]
};

class GatedDeltaNetBlock final : public Block {
 public:
  GatedDeltaNetBlock(const GdnConfig& cfg, GdnWeights w);
  void forward(const RunContext& ctx, float* hidden) override;

 private:
  GdnConfig cfg_;
  GdnWeights w_;
  std::vector<const std::string*> in_ptrs_;
  Buffer normed_, mixed_, conv_, z_, b_, a_, core_, out_;
};

// input_layernorm + linear_attn.* of layer L (spec.gdn), the grouped Qwen3-Next projections split
// into the de-grouped q|k|v, z, b, a rows.
std::unique_ptr<Block> load_gated_delta_net(const Checkpoint& ckpt, const ModelSpec& spec,
                                            const LayerSpec& L, Backend& be, bool activations);

}  // namespace fp4kit::engine
