#pragma once
// What the engine needs to know about a checkpoint to run it: the family, the dimensions, and the
// tensor names of every part of every layer (per-expert, Mixtral-style, fused 3-D or BMM 3-D
// experts).
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/engine/rope.hpp"

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

enum class Family {
  Llama, Mistral, Qwen2, Qwen3, Qwen2Moe, Qwen3Moe, Mixtral, GptOss, Llama4, Qwen3Next, Qwen3_5Moe,
  DeepseekV2, DeepseekV3, Glm4Moe, Olmoe
};

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
  LinearRef gate, up, down;  // BMM experts: sizes only (gate/up [I, H], down [H, I])
};

// gpt-oss BMM experts of one MoE layer (spec 4): `module` is the plan's name of the 3-D tensor
// (<block>experts.gate_up_proj / down_proj), one module for all experts, so its statistics are
// the amax over every token routed to any expert. Stored as BF16/F16/F32 [E, K, N] under
// `module`, as MXFP4 `<module>_blocks` [E, N, K/32, 16] + `<module>_scales` [E, N, K/32], or as
// fp4kit's / ModelOpt's NVFP4 3-D output (`module` U8 [E, K/2, N] + `_weight_scale` [E, K/16, N]
// + `_weight_scale_2`); the bias is `<module>_bias` [E, N].
struct BmmRef {
  enum class Storage { Float, Mxfp4, Nvfp4 };
  std::string module;
  Storage storage = Storage::Float;
  uint64_t n = 0, k = 0;  // each expert's matrix as a linear: [N, K] = transpose of [K, N]
};

// A Gated DeltaNet layer's tensors (Qwen3-Next, Qwen3.5). Qwen3.5 names in_proj_qkv [2kd + vd, H]
// (rows q; k; v), in_proj_z [vd, H], in_proj_b / in_proj_a [nv, H]; Qwen3-Next in_proj_qkvz
// [2kd + 2vd, H] and in_proj_ba [2nv, H], grouped per key head (`grouped`: rows of group g are
// q_g, k_g, v_g (r heads), z_g (r heads) and b_g, a_g).
struct GdnSpec {
  bool grouped = false;
  LinearRef qkv, z, b, a;  // grouped: qkv = in_proj_qkvz, b = in_proj_ba (z, a unused)
  LinearRef out;           // out_proj [H, vd]
  std::string conv, A_log, dt_bias, norm;  // tensor names
  int nk = 0, nv = 0, dk = 0, dv = 0, kernel = 0;
};

struct LayerSpec {
  std::string prefix;  // model.layers.L.
  bool linear_attention = false;  // the mixer is a Gated DeltaNet (`gdn`), not self_attn
  GdnSpec gdn;
  bool attn_output_gate = false;  // q_proj holds [q_h ; gate_h] per head; o_proj reads o * sigmoid(gate)
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
  bool attn_sinks = false;         // gpt-oss: self_attn.sinks, one logit per head
  // gpt-oss: BMM experts (gate/up interleaved in gate_up_proj's N), the router at mlp.router.
  // Llama-4: BMM experts with gate = the first I of gate_up_proj's N, up = the last I.
  bool bmm_experts = false;
  bool bmm_interleaved = true;
  BmmRef bmm_gate_up, bmm_down;
  // Llama-4 attention: RoPE (interleaved pairs) on `rope` layers only (config no_rope_layers: 1 =
  // RoPE); on RoPE layers an optional weightless L2 norm of q and k after RoPE (use_qk_norm); on
  // NoPE layers an optional per-position query temperature (attn_temperature_tuning); and
  // chunked causal attention (keys of the same attention_chunk_size block only) where layer_types
  // says "chunked_attention".
  bool rope = true;
  bool l2_qk_norm = false;
  bool temperature_tuning = false;
  int attention_chunk = 0;  // 0 = not chunked
  // DeepSeek multi-head latent attention (ModelSpec::mla): q = q_b_proj(norm(q_a_proj x)) with
  // q-LoRA (`q` is q_b_proj then), else q_proj (`q`); kv_a_proj_with_mqa, kv_b_proj; o_proj (`o`).
  bool mla = false;
  LinearRef q_a, kv_a, kv_b;
  // OLMoE: q_norm / k_norm span the whole projection (all heads jointly), not each head.
  bool qk_norm_whole = false;
};

// DeepSeek-V2/V3 MLA dimensions (config.json).
struct MlaDims {
  int64_t q_lora_rank = 0;  // 0: no q-LoRA (q_proj)
  int64_t kv_lora_rank = 0, qk_nope = 0, qk_rope = 0, v = 0;
  bool rope_interleave = true;
  float softmax_scale = 0.0f;  // qk_head_dim^-1/2, times YaRN's mscale(factor, mscale_all_dim)^2
};

// How the router's logits become (expert, weight) pairs.
enum class Routing {
  SoftmaxTopk,  // softmax over all experts, top-k, optional renormalisation (Qwen-MoE, Mixtral)
  TopkSoftmax,  // top-k of the logits, softmax over those k (gpt-oss)
  // Llama-4: top-k of the logits, score = sigmoid(logit); each expert reads the token MULTIPLIED
  // by its score and the expert outputs are summed unweighted.
  TopkSigmoidScaledInput,
  // DeepSeek-V3 / GLM-4-MoE: sigmoid scores, e_score_correction_bias for selection only,
  // group-limited top-k, routed_scaling_factor (backend.hpp: RouterKind::SigmoidGroupTopk).
  SigmoidGroupTopk,
  // DeepSeek-V2 topk_method group_limited_greedy: softmax scores, a group scores its largest,
  // the topk_group best groups compete, weight = score x routed_scaling_factor
  // (RouterKind::SoftmaxGroupTopk). V2's greedy is SoftmaxTopk with the scaling.
  SoftmaxGroupTopk,
};

struct ModelSpec {
  Family family = Family::Llama;
  std::string model_type;
  int64_t hidden = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, vocab = 0;
  int64_t n_experts = 0, top_k = 0;
  bool norm_topk = false;  // renormalise the top-k routing weights (always for Mixtral)
  Routing routing = Routing::SoftmaxTopk;
  int64_t n_group = 1, topk_group = 1;  // SigmoidGroupTopk, SoftmaxGroupTopk
  float routed_scaling = 1.0f;          // routed_scaling_factor (every weight times it, last)
  MlaDims mla;                          // layers with LayerSpec::mla
  // gpt-oss experts' clamped SwiGLU: gate <= limit, |up| <= limit, (up + 1) * gate * sigmoid(alpha
  // gate); 0 = plain silu(gate) * up.
  float swiglu_alpha = 0.0f, swiglu_limit = 0.0f;
  float eps = 1e-6f;
  // Zero-centred norms (Qwen3-Next, Qwen3.5): input/post-attention/final/q/k norms scale by
  // 1 + weight.
  bool norm_one_plus = false;
  RopeParams rope;
  bool rope_interleaved = false;  // Llama-4: rotate pairs (2i, 2i+1), not (i, i + head_dim/2)
  // Llama-4 attention temperature on NoPE layers: q *= log1p(floor((pos + 1) / floor_scale)) *
  // attn_scale + 1.
  float floor_scale = 8192.0f, attn_scale = 0.1f;
  std::string embed;    // model.embed_tokens.weight (language_model.model... in Llama-4 wrappers)
  std::string final_norm;
  LinearRef lm_head;    // module "lm_head" or the embedding when tied
  bool lm_head_tied = false;  // lm_head is the embedding `embed`
  std::vector<LayerSpec> layers;

  // Reads config.json and the tensor names. Throws fp4kit::Error for an unsupported family or
  // missing tensors (naming the checkpoint and tensor).
  static ModelSpec from_checkpoint(const Checkpoint& ckpt);
};

const char* family_name(Family f);

}  // namespace fp4kit::engine
