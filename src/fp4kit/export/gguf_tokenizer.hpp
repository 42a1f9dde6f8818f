#pragma once
// The tokenizer.* metadata llama.cpp runs a GGUF with, from the checkpoint's tokenizer.json,
// tokenizer_config.json and config.json: vocabulary, token types, merges (byte-level BPE) or
// scores (SentencePiece-style BPE with byte fallback), special token ids, add_bos/add_eos, chat
// template. Keys as gguf-py's constants.py names them.
#include <filesystem>

#include "fp4kit/io/gguf_file.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit {

// Throws fp4kit::Error naming the file and the field when the tokenizer is missing or of a kind
// llama.cpp has no tokenizer for (fp4kit writes "llama" = SentencePiece BPE and "gpt2" =
// byte-level BPE with the Qwen2 or Llama-3 pre-tokenizer).
void add_tokenizer_metadata(GgufMetadata& meta, const std::filesystem::path& dir,
                            const ModelConfig& config);

}  // namespace fp4kit
