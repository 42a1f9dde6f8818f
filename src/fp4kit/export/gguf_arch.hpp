#pragma once
// What llama.cpp calls a Hugging Face model: its architecture name, the metadata keys it reads
// ({arch}.block_count, {arch}.attention.head_count, ...), and its tensor names (token_embd,
// blk.N.attn_q, blk.N.ffn_gate_exps with experts stacked 3-D, ...). Names and keys as in
// llama.cpp's convert_hf_to_gguf.py and gguf-py constants.py.
#include <cstdint>
#include <optional>
#include <string>

#include "fp4kit/io/gguf_file.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit {

struct GgufArch {
  std::string name;         // llama.cpp architecture ("llama", "qwen3moe", ...)
  bool permute_qk = false;  // llama.cpp's llama runs RoPE on adjacent pairs: HF's rotate_half
                            // q/k rows are reordered (convert_hf_to_gguf's LlamaModel.permute)
  bool needs_output = false;  // its loader requires output.weight even with tied embeddings
                              // (qwen2moe, olmoe): the embedding is written a second time
  // Its graph multiplies attention products by their .scale but not the MLP's (qwen2, qwen2moe,
  // olmoe in llama.cpp 0c1e570, 2026-10-01): NVFP4 MLP weights would run unscaled, so the MLP
  // stays unquantized (plan rule; F32 decode when repacking).
  bool mlp_scale_ignored = false;
};
// Module glob of the MLP whose .scale the architecture ignores.
inline constexpr const char* kGgufMlpGlob = "*.mlp.*";

// The architecture for a config; throws fp4kit::Error naming the model_type for families llama.cpp
// has no architecture for, and for those fp4kit does not map to GGUF yet.
GgufArch gguf_arch(const ModelConfig& config, const std::string& label);

// general.* and {arch}.* keys from config.json.
void add_arch_metadata(GgufMetadata& meta, const GgufArch& arch, const ModelConfig& config,
                       const std::string& model_name);

struct GgufTarget {
  std::string name;     // GGUF tensor name ("blk.3.ffn_up_exps.weight")
  int64_t expert = -1;  // slot in a stacked [E, N, K] tensor, -1 for an ordinary tensor
  bool always_f32 = false;  // norms, routers, 1-D tensors: llama.cpp reads them as F32
  int64_t permute_heads = 0;  // > 0: rows are RoPE pairs of this many heads to reorder
};

// The GGUF tensor a Hugging Face tensor ("model.layers.3.mlp.experts.5.up_proj.weight") becomes,
// or nullopt when llama.cpp has no name for it.
std::optional<GgufTarget> gguf_target(const std::string& hf_tensor, const GgufArch& arch,
                                      const ModelConfig& config, uint64_t ndim);

// The rope_scaling / rope_parameters object of config.json (transformers 4 / 5), null when none.
nlohmann::json rope_scaling_of(const ModelConfig& config);

// Llama-3 RoPE scaling (rope_type "llama3"): the per-frequency factors llama.cpp reads from
// "rope_freqs.weight" (F32 [head_dim / 2]), as convert_hf_to_gguf computes them (float32).
std::vector<float> llama3_rope_factors(const ModelConfig& config);

// Output row r of a permuted q/k weight takes source row row_of[r] (heads of `rows / heads` rows).
std::vector<uint64_t> rope_pair_rows(uint64_t rows, int64_t heads);

}  // namespace fp4kit
