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
  // Module globs whose products its graph does not multiply by their .scale (llama.cpp 0c1e570,
  // 2026-10-01: the MLP of qwen2, qwen2moe, olmoe; the linear attention of qwen3next): NVFP4 weights there would run unscaled, so they stay unquantized (plan rules;
  // F32 decode when repacking). `unscaled_what` names them in messages.
  std::vector<std::string> unscaled_globs;
  std::string unscaled_what;
  // Qwen3-Next / Qwen3.5 RMSNorms multiply by (1 + weight): the GGUF holds 1 + weight (F32),
  // except for the gated norm of the linear-attention layers (plain weight).
  bool zero_centred_norms = false;
  // post_attention_layernorm is "post_attention_norm" (qwen35moe, qwen3next), else "ffn_norm".
  std::string post_attention_norm = "ffn_norm";
};

// The architecture for a config; throws fp4kit::Error naming the model_type for families llama.cpp
// has no architecture for, and for those fp4kit does not map to GGUF yet.
GgufArch gguf_arch(const ModelConfig& config, const std::string& label);

// general.* and {arch}.* keys from config.json.
void add_arch_metadata(GgufMetadata& meta, const GgufArch& arch, const ModelConfig& config,
                       const std::string& model_name);

// A reordering of heads grouped by key head into llama.cpp's tiled order
// (convert_hf_to_gguf's _reorder_v_heads): the `groups * per_group` heads of `head_dim` rows (or
// columns) starting at `offset` go from [group][j] to [j][group]; the rest stays.
struct HeadTiling {
  int64_t groups = 0, per_group = 0, head_dim = 0;  // groups == 0: none
  uint64_t offset = 0;
  bool columns = false;  // reorders columns (elements of each row) instead of rows
};

// Why a checkpoint tensor is left out of the GGUF ("" when it is not): a vision tower (llama.cpp
// reads it from a separate mmproj GGUF) or multi-token-prediction layers.
std::string gguf_left_out(const std::string& hf_tensor);

// RoPE dimensions: head_dim, or its partial_rotary_factor share (qwen35moe).
int64_t rope_dims(const ModelConfig& config, const GgufArch& arch);

struct GgufTarget {
  enum class Values { Copy, PlusOne, NegExp };  // stored x, 1 + x (zero-centred norms), -exp(x)
  std::string name;     // GGUF tensor name ("blk.3.ffn_up_exps.weight")
  int64_t expert = -1;  // slot in a stacked [E, N, K] tensor, -1 for an ordinary tensor
  bool always_f32 = false;  // norms, routers, 1-D tensors: llama.cpp reads them as F32
  int64_t permute_heads = 0;  // > 0: rows are RoPE pairs of this many heads to reorder
  HeadTiling tiling;          // Qwen3.5 linear attention with fewer key than value heads
  Values values = Values::Copy;  // computed in float32 (the target is F32)
  bool squeeze = false;       // drop dims of size 1 (conv1d [C, 1, K] -> ne {K, C})
};

// Output index -> source index of a HeadTiling over `n` rows (or columns); empty when none.
std::vector<uint64_t> tiled_heads(uint64_t n, const HeadTiling& t);

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
