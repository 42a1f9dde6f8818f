#pragma once
// Gated MLPs: down(act(gate x) * up x) with separate gate/up linears, or one fused gate_up linear
// (BMM experts: gpt-oss interleaved rows with its clamped SwiGLU, Llama-4 split halves with SiLU);
// and the dense MLP block (post-attention norm + MLP + residual).
#include <memory>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/model_spec.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

struct GatedMlp {
  enum class Kind { Separate, FusedInterleaved, FusedSplit };
  Kind kind = Kind::Separate;
  Linear gate, up, down;  // fused: `gate` is gate_up [2I, H], `up` unused
  // FusedSplit from separate gate / up linears stacked by the backend (load_linear_pair):
  // `up` carries only the up module's name, observed with gate's.
  bool stacked = false;
  float alpha = 0.0f, limit = 0.0f;  // FusedInterleaved: clamped SwiGLU parameters
  int64_t bmm_expert = -1;  // an expert of 3-D BMM tensors: its index (per-expert statistics)

  size_t inter() const { return down.k; }
  // out [rows, hidden] = the MLP of x [rows, hidden]; observes the gate/up input (once: the
  // modules share it) and the down input. g, u: scratch.
  void run(const RunContext& ctx, const float* x, size_t rows, float* out, Buffer& g,
           Buffer& u) const;
};

// gate/up/down as three linears (a dense MLP, a per-expert or fused-3-D expert, a shared expert);
// gate and up as one stacked linear where the backend stacks them (Backend::load_linear_pair).
GatedMlp load_gated_mlp(const Checkpoint& ckpt, const LinearRef& gate, const LinearRef& up,
                        const LinearRef& down, Backend& be, bool activations);

class DenseMlpBlock final : public Block {
 public:
  // one_plus: the norm scales by 1 + weight (zero-centred norms).
  DenseMlpBlock(size_t hidden, float eps, Buffer norm, GatedMlp mlp, bool one_plus = false)
      : hidden_(hidden), eps_(eps), one_plus_(one_plus), norm_(std::move(norm)),
        mlp_(std::move(mlp)) {}
  void forward(const RunContext& ctx, float* hidden) override;

 private:
  size_t hidden_;
  float eps_;
  bool one_plus_;
  Buffer norm_;
  GatedMlp mlp_;
  Buffer normed_, out_, g_, u_;
};

// post_attention_layernorm + the layer's dense MLP (spec gate/up/down).
std::unique_ptr<Block> load_dense_mlp(const Checkpoint& ckpt, const ModelSpec& spec,
                                      const LayerSpec& L, Backend& be, bool activations);

}  // namespace fp4kit::engine
