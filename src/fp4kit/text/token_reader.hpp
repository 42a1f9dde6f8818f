#pragma once
// Reads a calibration / evaluation data file (calibration_data.hpp's formats and document rules)
// as a stream of token ids, one 1 MiB block of the file at a time: memory follows the block and
// the ids not yet taken, whatever the file's size or the length of its lines and documents (a long
// document is encoded in pieces, text/piece_encoder.hpp). Known limit: a JSONL line is parsed
// whole, so memory follows the longest JSONL line.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fp4kit/text/calibration_data.hpp"

namespace fp4kit::text {

class Tokenizer;

class TokenReader {
 public:
  // `tokenizer` is required for text formats and, when given for id files, checks every id.
  // Errors (fp4kit::Error) name the file: missing, empty, not UTF-8, a JSONL line without the
  // field, no text at all (reported at the end of the file), ids outside the vocabulary.
  TokenReader(const std::filesystem::path& path, const Tokenizer* tokenizer, const CalibrationOptions& options);
  ~TokenReader();
  TokenReader(const TokenReader&) = delete;
  TokenReader& operator=(const TokenReader&) = delete;

  // Appends up to `n` more ids to `out`; returns how many (fewer only at the end of the data).
  size_t read(std::vector<int32_t>& out, size_t n);

  // Documents that begin among the ids read so far (0 for id files).
  int64_t documents() const;
  // Pieces cut where the tokenizer was not seen to split (piece_encoder.hpp): ids near such a cut
  // can differ from encoding the document whole. 0 for ordinary text.
  uint64_t forced_cuts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a file line by line in 1 MiB blocks and calls part(text, byte offset, line number,
// line_ends) for each line or, for a line longer than what is in memory, each part of it. Parts
// are cut at UTF-8 character boundaries and end in '\r' only at the end of their line; a final
// line without '\n' is a line too. Throws for a missing or empty file.
class LineReader {
 public:
  explicit LineReader(const std::filesystem::path& path);
  using Part = std::function<void(std::string_view text, uint64_t offset, size_t line_no, bool line_ends)>;
  // Reads the next block and hands out its parts; at the end of the file, hands out what was held
  // back and returns false.
  bool step(const Part& part);

 private:
  std::filesystem::path path_;
  std::ifstream in_;
  std::vector<char> block_;
  std::string work_;          // held-back bytes of the previous block + this block
  uint64_t work_offset_ = 0;  // file offset of work_[0]
  size_t line_no_ = 1;
  bool line_open_ = false;    // parts of the current line were handed out
  bool done_ = false;
};

}  // namespace fp4kit::text
