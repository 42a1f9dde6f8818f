#pragma once
// A Hugging Face tokenizer (tokenizer.json), giving the same ids as the `tokenizers` library:
//   * byte-level BPE (GPT-2, Llama-3, Qwen2/3): normalizer (e.g. NFC), regex Split through
//     PCRE2 with Unicode properties, ByteLevel, BPE by merge rank;
//   * SentencePiece-style BPE (Llama-2): Prepend/Replace normalizer or Metaspace, BPE with
//     byte fallback <0xXX> and fused unk;
//   * added / special tokens, matched in the raw text before everything else;
//   * the post-processor's special tokens (e.g. BOS) when add_special is true.
// Unsupported components (Unigram, WordPiece, BertNormalizer, ...) throw fp4kit::Error naming
// the file and the component. Thread-safe: encode/decode may run concurrently.
//
// Known limit: regex character properties come from PCRE2 10.42 (Unicode 14) where `tokenizers`
// uses Oniguruma with Unicode 16, so text containing characters first assigned in Unicode 15/16
// (e.g. CJK Extension H, Kaktovik numerals, Garay) can split differently; on 20,000 random
// strings over all code points this was the only remaining difference (7 strings).
//
// BOS/EOS: bos_id() comes from tokenizer_config.json "bos_token" when that key exists (null
// means none, as for Qwen), otherwise generation_config.json "bos_token_id". eos_ids() lists
// generation_config.json "eos_token_id" (int or list) and tokenizer_config.json "eos_token".
// tokenizer_config.json add_bos_token/add_eos_token = true add BOS/EOS when the tokenizer.json
// post-processor does not already (what transformers' Llama tokenizers do).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fp4kit::text {

class Tokenizer {
 public:
  // `path` is a directory holding tokenizer.json (and optionally tokenizer_config.json,
  // generation_config.json) or the tokenizer.json file itself.
  static Tokenizer load(const std::filesystem::path& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // `text` must be valid UTF-8 (else fp4kit::Error). add_special adds the post-processor's
  // tokens (BOS for Llama-2 style tokenizers, nothing for Qwen).
  std::vector<int32_t> encode(std::string_view text, bool add_special = true) const;

  // Appends the ids of one part of a longer text. `begins` / `ends`: whether the part begins /
  // ends the text (where the special prefix / suffix go when add_special, and where the
  // normalizer's Prepend / Append / Strip and Metaspace's prepend_scheme "first" act). The
  // text's ids are its parts' ids concatenated when every cut falls where the pipeline splits
  // anyway; text/piece_encoder.hpp chooses such cuts. encode(t, s) = encode_part(t, true, true, s).
  void encode_part(std::string_view text, bool begins, bool ends, bool add_special,
                   std::vector<int32_t>& out) const;

  // Unknown ids are skipped (as HF does); skip_special drops special added tokens.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  int32_t bos_id() const;  // -1 when the model has none
  int32_t eos_id() const;  // the main EOS, -1 when none
  const std::vector<int32_t>& eos_ids() const;
  int32_t pad_id() const;  // -1 when none
  // Ids encode(..., true) puts before / after the text.
  const std::vector<int32_t>& special_prefix() const;
  const std::vector<int32_t>& special_suffix() const;

  // Highest id (model vocabulary or added token) + 1.
  size_t vocab_size() const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;

  const std::filesystem::path& json_path() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp4kit::text
