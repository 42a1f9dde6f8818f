#pragma once
// The "pre_tokenizer" of a tokenizer.json: splits normalized text into words that the BPE model
// encodes independently (Hugging Face semantics: Split with its five delimiter behaviours,
// ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence).
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4kit::text {

class Regex;

// How the stretches a pattern matches are kept (see HF's SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
  size_t begin, end;
  bool is_match;
};

// Applies `behavior` to a partition of a string into matched / unmatched spans and returns the
// kept [begin, end) ranges, empty ones dropped.
std::vector<std::pair<size_t, size_t>> apply_split_behavior(const std::vector<Span>& spans, SplitBehavior behavior);

// Partitions s by the regex matches into spans covering all of s.
std::vector<Span> spans_from_matches(std::string_view s, const std::vector<std::pair<size_t, size_t>>& matches);

class PreTokenizer {
 public:
  static PreTokenizer parse(const nlohmann::json& j, const std::string& file);

  PreTokenizer();
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // Splits one normalized stretch of text. `at_input_start` says whether it begins the whole
  // input (Metaspace's prepend_scheme "first" depends on it). Appends words to `words`.
  void apply(std::string_view text, bool at_input_start, std::vector<std::string>& words) const;

  // True when a ByteLevel step maps bytes to characters (the decoder must then undo it).
  bool is_byte_level() const { return byte_level_; }

 private:
  enum class Kind { Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit };
  struct Step {
    Kind kind;
    std::shared_ptr<Regex> regex{};
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel
    std::string replacement{};      // Metaspace
    int prepend_scheme = 0;         // Metaspace: 0 always, 1 first, 2 never
    bool split = true;              // Metaspace
    bool individual_digits = false; // Digits
  };
  struct Piece {
    std::string text;
    bool at_start;
  };
  void add(const nlohmann::json& j, const std::string& file);
  void run_step(const Step& step, std::vector<Piece>& pieces) const;
  std::vector<Step> steps_;
  bool byte_level_ = false;
};

}  // namespace fp4kit::text
