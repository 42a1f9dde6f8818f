#pragma once
// config.json as fp4kit needs it. Never crashes on real-world configs: `architectures` null,
// missing or empty; multimodal wrappers that nest the language model under `text_config`;
// `torch_dtype` or `dtype`; tied embeddings.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4kit {

struct ModelConfig {
  nlohmann::json raw = nlohmann::json::object();   // the whole config.json
  nlohmann::json text = nlohmann::json::object();  // text_config when present, else raw
  std::string model_type;                          // of the language model ("qwen3_moe", ...)
  std::string outer_model_type;                    // raw["model_type"] (differs for wrappers)
  std::vector<std::string> architectures;          // empty when null or missing
  std::string dtype;                               // torch_dtype or dtype, "" when absent

  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t moe_intermediate_size = 0;
  int64_t shared_expert_intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / heads when absent
  int64_t vocab_size = 0;
  int64_t num_experts = 0;          // num_experts / num_local_experts / n_routed_experts
  int64_t num_experts_per_tok = 0;
  int64_t n_shared_experts = 0;
  int64_t first_k_dense_replace = 0;
  bool norm_topk_prob = false;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nlohmann::json rope_scaling;  // null when absent

  // Added for the architecture tables (all optional in config.json).
  bool has_text_config = false;        // the language model is nested under text_config
  int64_t q_lora_rank = 0;             // DeepSeek MLA; 0 when null/absent (no q-LoRA: q_proj)
  int64_t kv_lora_rank = 0;
  int64_t num_nextn_predict_layers = 0;  // DeepSeek/GLM MTP layers stored after the last layer
  int64_t decoder_sparse_step = 1;     // Qwen-MoE: layer i is MoE when (i+1) % step == 0
  std::vector<int64_t> mlp_only_layers;  // Qwen-MoE: layers with a dense MLP
  std::vector<std::string> layer_types;  // Qwen3-Next/3.5: "linear_attention" / "full_attention"

  // Parses; `label` (the file path) names the file in errors. Throws fp4kit::Error only for
  // values of the wrong type, never for missing optional keys.
  static ModelConfig parse(const nlohmann::json& config, const std::string& label);
};

}  // namespace fp4kit
