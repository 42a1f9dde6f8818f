#pragma once
// The BPE model of a tokenizer.json: vocabulary, merges by rank, byte fallback and unknown-token
// handling exactly as Hugging Face `tokenizers` does them (models/bpe/{model,word}.rs), with a
// per-word cache because natural text repeats words constantly.
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/text/token_map.hpp"

namespace fp4kit::text {

struct TokenizerFile;

class BpeModel {
 public:
  // Parses the "model" value; `file` names tokenizer.json in errors (unsupported model types,
  // merges that name tokens missing from the vocabulary, ...). When `extracted` is given, the
  // vocabulary and merges it took out of the JSON are moved from it.
  static BpeModel parse(const nlohmann::json& model, const std::string& file, TokenizerFile* extracted = nullptr);

  BpeModel() = default;
  BpeModel(BpeModel&& other) noexcept;
  BpeModel& operator=(BpeModel&& other) noexcept;

  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const TokenMap& vocab() const { return vocab_; }
  size_t merge_count() const { return merges_.size(); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  TokenMap vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  int32_t byte_ids_[256];  // ids of "<0xXX>" for byte fallback, -1 when absent

  // Word -> ids. Bounded: cleared when it grows past kCacheLimit entries.
  static constexpr size_t kCacheLimit = 1 << 20;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace fp4kit::text
