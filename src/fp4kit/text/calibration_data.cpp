#include "fp4kit/text/calibration_data.hpp"

#include <algorithm>

#include "fp4kit/error.hpp"
#include "fp4kit/text/token_reader.hpp"

namespace fp4kit::text {

namespace {

std::string extension_of(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

// The first max_tokens ids (0: all) of the reader's stream.
std::vector<int32_t> read_prefix(TokenReader& reader, int64_t max_tokens) {
  std::vector<int32_t> stream;
  if (max_tokens > 0) {
    reader.read(stream, static_cast<size_t>(max_tokens));
  } else {
    while (reader.read(stream, size_t{1} << 20) > 0) {
    }
  }
  return stream;
}

}  // namespace

CalibrationFormat resolve_format(const std::filesystem::path& path, CalibrationFormat requested) {
  if (requested != CalibrationFormat::Auto) return requested;
  const std::string ext = extension_of(path);
  if (ext == ".jsonl" || ext == ".json") return CalibrationFormat::Jsonl;
  if (ext == ".u16") return CalibrationFormat::TokensU16;
  if (ext == ".u32") return CalibrationFormat::TokensU32;
  return CalibrationFormat::Text;
}

std::vector<int32_t> load_token_stream(const std::filesystem::path& path, const Tokenizer* tokenizer,
                                       const CalibrationOptions& options, int64_t* documents) {
  // Read a block at a time, and only until the stream holds `max_tokens`: memory and time
  // follow what is used, not the file's size (token_reader.hpp).
  TokenReader reader(path, tokenizer, options);
  std::vector<int32_t> stream = read_prefix(reader, options.max_tokens);
  if (documents) *documents = reader.documents();
  return stream;
}

std::vector<int64_t> evenly_spaced_window_starts(int64_t stream_tokens, int64_t samples, int64_t seq_len) {
  if (samples <= 0 || seq_len <= 0) throw Error("--samples and --seq-len must be positive");
  if (samples > stream_tokens / seq_len) {
    int64_t needed = 0;
    const bool overflow = __builtin_mul_overflow(samples, seq_len, &needed);
    throw Error("calibration data has " + std::to_string(stream_tokens) + " tokens, fewer than --samples " +
                std::to_string(samples) + " x --seq-len " + std::to_string(seq_len) +
                (overflow ? " (a product too large for any file: more than 2^63 tokens)"
                          : " = " + std::to_string(needed)));
  }
  std::vector<int64_t> starts(static_cast<size_t>(samples), 0);
  for (int64_t i = 1; i < samples; ++i) {
    // i * (T - L) fits in int64 for any realistic T (it is below samples * T).
    starts[static_cast<size_t>(i)] = i * (stream_tokens - seq_len) / (samples - 1);
  }
  return starts;
}

CalibrationSamples load_calibration_data(const std::filesystem::path& path, const Tokenizer* tokenizer,
                                         const CalibrationOptions& options) {
  CalibrationSamples out;
  // The windows are spread over the first max(N x L, stream_budget) tokens of the file: all of
  // an ordinary calibration file, a bounded prefix of a huge one.
  CalibrationOptions read = options;
  int64_t needed = 0;
  if (__builtin_mul_overflow(options.samples, options.seq_len, &needed))
    throw Error(path.string() + ": --samples " + std::to_string(options.samples) + " x --seq-len " +
                std::to_string(options.seq_len) +
                " is too large for any file (more than 2^63 tokens)");
  if (options.samples > 0 && options.seq_len > 0)
    read.max_tokens = options.stream_budget > 0 ? std::max(needed, options.stream_budget) : 0;
  TokenReader reader(path, tokenizer, read);
  const std::vector<int32_t> stream = read_prefix(reader, read.max_tokens);
  out.documents = reader.documents();
  out.forced_cuts = reader.forced_cuts();
  out.stream_tokens = static_cast<int64_t>(stream.size());
  out.seq_len = options.seq_len;
  try {
    out.starts = evenly_spaced_window_starts(out.stream_tokens, options.samples, options.seq_len);
  } catch (const Error& e) {
    throw Error(path.string() + ": " + e.what());
  }
  out.ids.reserve(static_cast<size_t>(options.samples * options.seq_len));
  for (const int64_t s : out.starts)
    out.ids.insert(out.ids.end(), stream.begin() + s, stream.begin() + s + options.seq_len);
  return out;
}

}  // namespace fp4kit::text
