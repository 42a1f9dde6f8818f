#pragma once
// Added tokens (special tokens such as <|im_start|>, and plain added tokens such as <think>):
// found in the text before anything else, leftmost match first and the longest one there,
// with HF's lstrip / rstrip / single_word rules (tokenizer/added_vocabulary.rs).
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fp4kit::text {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A stretch of input: either an added token (id >= 0) or text for the normal pipeline (id -1).
struct TextSegment {
  size_t begin, end;
  int32_t id;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `patterns[i]` is what to look for (the content, or its normalized form); ids[i] its token.
  void add(const AddedToken& token, std::string pattern);
  bool empty() const { return count_ == 0; }

  // Partitions `s` into text and added-token segments (empty text segments omitted).
  std::vector<TextSegment> split(std::string_view s) const;

 private:
  struct Entry {
    std::string pattern;
    AddedToken token;
  };
  std::array<std::vector<Entry>, 256> by_first_byte_;
  size_t count_ = 0;
};

}  // namespace fp4kit::text
