#pragma once
// A deterministic synthetic checkpoint with real tensor names and layouts (Qwen3-MoE style by
// default), for `fp4kit demo`, tests and benchmarks. Same spec -> same bytes on every machine
// (own PRNG, no std distributions).
#include <cstdint>
#include <filesystem>
#include <string>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

struct SyntheticMoeSpec {
  // "qwen3_moe", "mixtral" or "deepseek_v3" (DeepSeek-V3's MLA: 128 heads of 128 + 64 / 128,
  // q-LoRA 1536, kv-LoRA 512 (heads/head_dim/kv_heads ignored); `dense_layers` dense MLPs of
  // intermediate 18432 first, then MoE with a shared expert and e_score_correction_bias; always
  // DeepSeek's FP8 release format: every linear of the layers F8_E4M3 with 128 x 128
  // weight_scale_inv blocks (random codes: a memory and speed workload, not a model).
  std::string model_type = "qwen3_moe";
  int64_t dense_layers = 3;
  int64_t layers = 2;
  int64_t hidden = 256;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t head_dim = 64;
  int64_t experts = 8;
  int64_t top_k = 2;
  int64_t moe_intermediate = 128;
  int64_t vocab = 1024;
  bool fused_experts = false;  // Qwen3.5-style fused 3-D gate_up_proj/down_proj on disk
  bool tie_embeddings = false;
  uint64_t seed = 1;
  DType dtype = DType::BF16;   // BF16, F16 or F32
  uint64_t max_shard_bytes = 5ull << 30;
};

// Writes config.json, generation_config.json and the weights into dir (created; must be empty or
// absent). Returns the number of parameters.
uint64_t write_synthetic_moe(const std::filesystem::path& dir, const SyntheticMoeSpec& spec);

}  // namespace fp4kit
