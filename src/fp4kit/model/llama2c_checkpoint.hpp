#pragma once
// llama2.c checkpoints (Karpathy's "legacy", version-0 .bin format) turned into Hugging Face
// checkpoints, as shared/data/README.md describes for stories260K:
//   * a dense LlamaForCausalLM (q/k rows permuted from llama2.c's interleaved-pair RoPE to HF's
//     rotate_half RoPE, fp32 -> bf16 round-to-nearest-even, tensors sorted by name);
//   * a MixtralForCausalLM computing the same function ("split experts"): the FFN is zero-padded
//     to E x I' channels (I' a multiple of 16), expert e takes channels [e*I', (e+1)*I'), its
//     down_proj is multiplied by E (a power of two, so exact in bf16), the router is all zeros
//     and every token goes to all E experts with weight 1/E.
// `fp4kit demo` builds both from the stories260K file it carries.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace fp4kit {

struct Llama2cModel {
  int64_t dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, seq_len = 0;
  bool shared_classifier = true;  // header vocab > 0: the classifier is the token embedding
  // The float32 arrays in file order (token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2,
  // w3, rms_final, freq_cis_real, freq_cis_imag[, wcls]), matrices [out, in] row-major.
  std::vector<float> token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
      wcls;
  int64_t head_dim() const { return dim / heads; }
  int64_t kv_dim() const { return kv_heads * head_dim(); }
};

// Parses the bytes of a legacy llama2.c checkpoint; `name` is used in error messages. Throws
// fp4kit::Error for a bad header or a size that does not match the header.
Llama2cModel read_llama2c(std::span<const uint8_t> file, const std::string& name);

// Write config.json, generation_config.json and model.safetensors (bf16) into `dir` (created;
// must be absent or empty). Return the number of parameters written.
uint64_t write_llama2c_as_llama(const Llama2cModel& m, const std::filesystem::path& dir);
// `experts` must be a power of two (the down_proj scale must be exact in bf16).
uint64_t write_llama2c_as_mixtral(const Llama2cModel& m, const std::filesystem::path& dir,
                                  int64_t experts);

}  // namespace fp4kit
