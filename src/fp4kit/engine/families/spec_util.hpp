#pragma once
// Helpers the family tables (families/*.cpp) share to read config.json values and tensor names
// into a ModelSpec. Every failure names the checkpoint, tensor and rule.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/engine/model_spec.hpp"

namespace fp4kit {
class Checkpoint;
struct ModelConfig;
}

namespace fp4kit::engine {

// "<checkpoint>/config.json": how errors about config values name the file.
std::string config_label(const Checkpoint& c);

// s.rope from config.json (rope_parameters / rope_scaling, rope_theta) over s.head_dim, with the
// family's partial_rotary_factor `default_partial` where config.json has none.
void config_rope(const Checkpoint& c, const ModelConfig& cfg, ModelSpec& s,
                 double default_partial = 1.0);
// The config class's rms_norm_eps default `eps` where config.json has none.
void default_eps(const ModelConfig& cfg, ModelSpec& s, float eps);

bool has_linear(const Checkpoint& c, const std::string& module);
// Shape [N, K] of a linear, whatever its storage (float, NVFP4 format A or B).
std::pair<uint64_t, uint64_t> linear_shape(const Checkpoint& c, const std::string& module);
// The linear `module` (throws when its weight is missing).
LinearRef linear(const Checkpoint& c, const std::string& module);

bool json_bool(const nlohmann::json& j, const char* key, bool fallback);
int64_t json_int(const nlohmann::json& j, const char* key, int64_t fallback);
double json_num(const nlohmann::json& j, const char* key, double fallback);
// A json list of integers (booleans read as 0/1); `present` false when absent or null.
std::vector<int64_t> json_int_list(const nlohmann::json& j, const char* key, bool* present,
                                   const std::string& label);

// One BMM expert tensor (see BmmRef), whatever its storage; shapes checked against the expert
// count and, when known (> 0), the expected N and K.
BmmRef bmm_ref(const Checkpoint& c, const std::string& module, uint64_t experts, uint64_t want_n,
               uint64_t want_k);

// The layer is MoE with its router linear `module` (its .weight must exist).
void moe_router(const Checkpoint& c, const std::string& module, LayerSpec& L);

// BMM experts under `block` (gpt-oss mlp., Llama-4 feed_forward.): <block>experts.gate_up_proj
// [E, H, 2I] and <block>experts.down_proj [E, I, H] (bmm_ref) and one ExpertRef per expert
// (statistics names <block>experts.<e>, sizes gate/up [I, H], down [H, I]).
void bmm_experts(const Checkpoint& c, const ModelSpec& s, const std::string& block, LayerSpec& L);

// q/k/v/o_proj under <prefix>self_attn. with shapes checked against the spec's heads (q_proj
// holds q_factor * heads * head_dim rows: 2 when it carries an output gate).
void standard_attention(const Checkpoint& ckpt, const ModelSpec& s, int64_t layer, LayerSpec& L,
                        int q_factor = 1);

// The routed experts (per-expert gate/up/down_proj, Mixtral w1/w3/w2, or fused 3-D
// experts.gate_up_proj [E, 2I, H] + experts.down_proj [E, H, I] read in place as row ranges),
// the router `<block>gate` and the optional shared_expert (+ shared_expert_gate) of the MoE under
// `block` (e.g. model.layers.L.mlp.).
void standard_moe(const Checkpoint& ckpt, const ModelSpec& s, const std::string& block,
                  bool mixtral_names, LayerSpec& L);

// The group-limited sigmoid router (DeepSeek-V3, GLM-4-MoE): n_group, topk_group,
// routed_scaling_factor, norm_topk_prob from config.json (absent: the given class defaults;
// norm_topk_prob true), checked against the expert count and top-k.
void configure_sigmoid_group_router(const ModelConfig& cfg, ModelSpec& s, const std::string& label,
                                    int64_t default_groups, int64_t default_topk_groups,
                                    double default_scaling);

// DeepSeek / GLM feed-forward: the dense mlp.{gate,up,down}_proj before first_k_dense_replace
// (absent: `default_first_k`), the MoE under mlp. (standard_moe) from there on.
void first_k_dense_mlp(const Checkpoint& ckpt, const ModelConfig& cfg, const ModelSpec& s,
                       int64_t layer, int64_t default_first_k, LayerSpec& L);

// Qwen-MoE's rule: layer l is MoE unless listed in mlp_only_layers, when there are experts and
// (l + 1) % decoder_sparse_step == 0.
bool qwen_sparse_layer(const ModelConfig& cfg, const ModelSpec& s, int64_t layer);

// The dense MLP <prefix>mlp.gate_proj / up_proj / down_proj.
void dense_mlp(const Checkpoint& ckpt, LayerSpec& L);

// layer_types[layer] of config.json, or "" when the list is absent (throws when it is too short).
std::string layer_type(const ModelConfig& cfg, int64_t layer, int64_t layers,
                       const std::string& label);

}  // namespace fp4kit::engine
