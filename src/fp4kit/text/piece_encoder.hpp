#pragma once
// Encodes a document of any length in bounded pieces. The text arrives in fragments; once more
// than piece_bytes + piece_bytes / 16 + kCheckBytes bytes wait, the first ~piece_bytes are encoded
// and dropped, so memory and work follow the pieces, not the document (a 40 MB line without a
// paragraph break no longer goes through the tokenizer whole).
//
// The cut rule. A piece ends at the first position c at or after piece_bytes (within the next
// piece_bytes / 16 bytes) where
//   1. c is a space (U+0020) between two characters that are not ASCII whitespace ("x| y"); when
//      none of the first 16 such positions qualifies (no spaces: CJK text, one long token), any of
//      the next 256 character boundaries;
//   2. and the tokenizer splits there: the kCheckBytes before and after c give the same ids
//      encoded together as encoded apart (Tokenizer::encode_part, no special tokens).
// The ids are then those of the whole document for the tokenizers fp4kit reads: byte-level split
// patterns (GPT-2, Llama-3, Qwen, DeepSeek) never join a non-space character with the space after
// it, and SentencePiece vocabularies (Llama-2, stories260K) hold no token with "▁" after another
// character, so nothing joins across such a cut (tests: Qwen3 and stories260K, whole vs pieces).
// When no position qualifies (a "word" longer than the search, e.g. 64 KiB of letters), the piece
// is cut at the first character boundary at or after piece_bytes and forced_cuts() counts it:
// ids next to such a cut can differ from the whole document's.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace fp4kit::text {

class Tokenizer;

class PieceEncoder {
 public:
  static constexpr size_t kPieceBytes = size_t{1} << 20;
  static constexpr size_t kCheckBytes = 256;

  // strip_ascii_whitespace: the document's leading and trailing ASCII whitespace is dropped (the
  // plain-text reader's rule, calibration_data.hpp).
  PieceEncoder(const Tokenizer& tokenizer, bool add_special, bool strip_ascii_whitespace,
               size_t piece_bytes = kPieceBytes);

  // Adds a fragment of the current document (valid UTF-8 cut at character boundaries) and
  // appends to `out` the ids of the pieces that are complete.
  void append(std::string_view fragment, std::vector<int32_t>& out);
  // Ends the document: appends the ids of what is left. False when the document was empty.
  bool finish(std::vector<int32_t>& out);

  uint64_t forced_cuts() const { return forced_cuts_; }

 private:
  bool splits_at(size_t c) const;
  void encode_piece(std::vector<int32_t>& out);

  const Tokenizer& tok_;
  bool add_special_, strip_;
  size_t piece_, search_;
  std::string buf_;       // the document's text not encoded yet
  bool started_ = false;  // a piece of this document was encoded
  uint64_t forced_cuts_ = 0;
};

// The warning calibrate / eval print when `cuts` pieces of `data` were cut anyway ("" for 0).
std::string forced_cuts_warning(const std::filesystem::path& data, uint64_t cuts);

}  // namespace fp4kit::text
