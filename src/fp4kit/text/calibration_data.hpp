#pragma once
// Calibration / evaluation text for `fp4kit calibrate` and `fp4kit eval`: reads plain text,
// JSONL or pre-tokenized id files (never downloads anything) and cuts a deterministic set of
// fixed-length token windows.
//
// Documents:
//   * plain text: empty lines separate documents (a line holding only spaces does not); each
//     document is stripped of ASCII whitespace at both ends and dropped when nothing is left
//     (CRLF read as LF). This is Python's [b.strip() for b in text.split("\n\n") if b.strip()].
//   * JSONL: one JSON object per line, the document is its string field `text_field`; blank
//     lines are skipped, a line without that string field is an error naming file and line.
//   * .u16 / .u32: little-endian token ids, already one stream (no tokenizer needed).
// The token stream is the concatenation of tokenizer.encode(document, add_special) over the
// documents in file order (so Llama-2 style tokenizers put BOS before every document, Qwen none).
//
// Only the first max(N x L, kCalibrationStreamBudget) tokens of a file are read: the file is read
// in 1 MiB blocks and encoded as it is read (token_reader.hpp), a document longer than 1 MiB in
// pieces cut where the tokenizer splits anyway (piece_encoder.hpp states the rule), and reading
// stops at the block that reaches the budget: a file truncated after that gives the same windows.
//
// Window choice (deterministic, same inputs give the same windows): N windows of L tokens,
// evenly spaced over the stream of T tokens (T: the tokens read): start_i = floor(i * (T - L) / (N - 1)) (start 0
// when N = 1), so the first window starts the stream and the last one ends it. Windows never
// overlap; T < N * L is an error that says how many tokens the file gives.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace fp4kit::text {

class Tokenizer;

enum class CalibrationFormat {
  Auto,       // by extension: .jsonl/.json -> Jsonl, .u16 -> TokensU16, .u32 -> TokensU32, else Text
  Text,
  Jsonl,
  TokensU16,
  TokensU32,
};

// Tokens of a calibration file that windows are chosen from (4 Mi tokens, about 16 MB of text;
// shared/data's TinyStories validation set has 385k): more than any calibration set reads, and a
// bound on memory and time for a file of any size.
inline constexpr int64_t kCalibrationStreamBudget = int64_t{1} << 22;

struct CalibrationOptions {
  CalibrationFormat format = CalibrationFormat::Auto;
  std::string text_field = "text";  // JSONL field (--text-field)
  int64_t samples = 128;            // N (--samples)
  int64_t seq_len = 512;            // L (--seq-len)
  bool add_special = true;          // tokenizer special tokens (e.g. BOS) around each document
  // load_token_stream: read only the first max_tokens tokens (0: the whole file). Reading
  // stops at the block that reaches it, so a huge file costs what is used.
  int64_t max_tokens = 0;
  // load_calibration_data: the windows are chosen in the first max(N x L, stream_budget) tokens
  // (0: the whole file), so a 1 GB file is neither read nor tokenized whole.
  int64_t stream_budget = kCalibrationStreamBudget;
};

struct CalibrationSamples {
  int64_t seq_len = 0;
  std::vector<int32_t> ids;     // samples() rows of seq_len ids, row-major
  std::vector<int64_t> starts;  // where each window starts in the token stream
  int64_t stream_tokens = 0;    // T: tokens read (the file's first tokens, see above)
  int64_t documents = 0;        // documents read (0 for pre-tokenized files)
  uint64_t forced_cuts = 0;     // long documents cut where the tokenizer was not seen to split

  int64_t samples() const { return static_cast<int64_t>(starts.size()); }
  std::span<const int32_t> sample(int64_t i) const {
    return std::span<const int32_t>(ids).subspan(static_cast<size_t>(i * seq_len), static_cast<size_t>(seq_len));
  }
};

// Reads `path` and returns N x L token windows. `tokenizer` is required for text formats and,
// when given for id files, is used to check every id is inside its vocabulary.
// Throws fp4kit::Error naming the file for a missing, empty, malformed or too short input.
CalibrationSamples load_calibration_data(const std::filesystem::path& path, const Tokenizer* tokenizer,
                                         const CalibrationOptions& options);

// The building blocks, exposed for tests and for `eval`, which reads the tokens it needs.
CalibrationFormat resolve_format(const std::filesystem::path& path, CalibrationFormat requested);
std::vector<std::string> read_text_documents(const std::filesystem::path& path);
std::vector<std::string> read_jsonl_documents(const std::filesystem::path& path, const std::string& text_field);
std::vector<int32_t> read_token_file(const std::filesystem::path& path, int bytes_per_id);
std::vector<int32_t> load_token_stream(const std::filesystem::path& path, const Tokenizer* tokenizer,
                                       const CalibrationOptions& options, int64_t* documents = nullptr);
std::vector<int64_t> evenly_spaced_window_starts(int64_t stream_tokens, int64_t samples, int64_t seq_len);

}  // namespace fp4kit::text
