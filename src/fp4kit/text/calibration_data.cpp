#include "fp4kit/text/calibration_data.hpp"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fp4kit/error.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

namespace {

std::string read_whole_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error(path.string() + ": calibration data file not found (fp4kit never downloads data)");
  if (std::filesystem::is_directory(path, ec)) throw Error(path.string() + ": is a directory, not a data file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open calibration data file");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string data = ss.str();
  if (data.empty()) throw Error(path.string() + ": calibration data file is empty");
  return data;
}

void check_utf8(const std::string& data, const std::filesystem::path& path) {
  if (const size_t bad = find_invalid_utf8(data); bad != std::string::npos)
    throw Error(path.string() + ": not valid UTF-8 text (byte offset " + std::to_string(bad) + ")");
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

std::string_view strip_ascii(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t\n\r\f\v");
  return s.substr(b, e - b + 1);
}

std::string extension_of(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
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

std::vector<std::string> read_text_documents(const std::filesystem::path& path) {
  std::string data = read_whole_file(path);
  if (data.compare(0, 3, "\xEF\xBB\xBF") == 0) data.erase(0, 3);  // UTF-8 byte-order mark
  check_utf8(data, path);
  std::vector<std::string> docs;
  std::string current;
  bool have_lines = false;
  const auto finish = [&] {
    if (have_lines) {
      const std::string_view stripped = strip_ascii(current);
      if (!stripped.empty()) docs.emplace_back(stripped);
    }
    current.clear();
    have_lines = false;
  };
  size_t pos = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    std::string_view line(data.data() + pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // CRLF
    // Only an empty line separates documents (as text.split("\n\n") does); a line of spaces is
    // content, which keeps the stream identical to shared/data's pre-tokenized TinyStories.
    if (line.empty()) {
      finish();
    } else {
      if (have_lines) current.push_back('\n');
      current.append(line);
      have_lines = true;
    }
    pos = nl + 1;
  }
  finish();
  if (docs.empty()) throw Error(path.string() + ": calibration data file contains no text");
  return docs;
}

std::vector<std::string> read_jsonl_documents(const std::filesystem::path& path, const std::string& text_field) {
  const std::string data = read_whole_file(path);
  std::vector<std::string> docs;
  size_t pos = 0, line_no = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    const std::string_view line(data.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (is_blank(line)) continue;
    const std::string where = path.string() + ":" + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": invalid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains(text_field) || !j[text_field].is_string())
      throw Error(where + ": no string field '" + text_field + "' (choose the field with --text-field)");
    std::string text = j[text_field].get<std::string>();
    if (!text.empty()) docs.push_back(std::move(text));
  }
  if (docs.empty()) throw Error(path.string() + ": calibration data file contains no text");
  return docs;
}

std::vector<int32_t> read_token_file(const std::filesystem::path& path, int bytes_per_id) {
  if (bytes_per_id != 2 && bytes_per_id != 4) throw Error("token files hold 2- or 4-byte ids");
  const std::string data = read_whole_file(path);
  if (data.size() % static_cast<size_t>(bytes_per_id) != 0)
    throw Error(path.string() + ": size " + std::to_string(data.size()) + " bytes is not a multiple of " +
                std::to_string(bytes_per_id) + " (little-endian uint" + std::to_string(8 * bytes_per_id) +
                " token ids expected)");
  const size_t n = data.size() / static_cast<size_t>(bytes_per_id);
  std::vector<int32_t> ids(n);
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  for (size_t i = 0; i < n; ++i) {
    uint32_t v = 0;
    for (int b = bytes_per_id - 1; b >= 0; --b) v = (v << 8) | p[i * static_cast<size_t>(bytes_per_id) + static_cast<size_t>(b)];
    if (v > static_cast<uint32_t>(INT32_MAX))
      throw Error(path.string() + ": token #" + std::to_string(i) + " = " + std::to_string(v) + " is too large");
    ids[i] = static_cast<int32_t>(v);
  }
  return ids;
}

std::vector<int32_t> load_token_stream(const std::filesystem::path& path, const Tokenizer* tokenizer,
                                       const CalibrationOptions& options, int64_t* documents) {
  const CalibrationFormat format = resolve_format(path, options.format);
  std::vector<int32_t> stream;
  if (documents) *documents = 0;
  if (format == CalibrationFormat::TokensU16 || format == CalibrationFormat::TokensU32) {
    stream = read_token_file(path, format == CalibrationFormat::TokensU16 ? 2 : 4);
    if (tokenizer) {
      for (size_t i = 0; i < stream.size(); ++i)
        if (static_cast<size_t>(stream[i]) >= tokenizer->vocab_size())
          throw Error(path.string() + ": token #" + std::to_string(i) + " = " + std::to_string(stream[i]) +
                      " is outside the tokenizer's vocabulary of " + std::to_string(tokenizer->vocab_size()));
    }
    return stream;
  }
  if (tokenizer == nullptr)
    throw Error(path.string() + ": text calibration data needs a tokenizer (tokenizer.json in the model directory)");
  const std::vector<std::string> docs = format == CalibrationFormat::Jsonl
                                            ? read_jsonl_documents(path, options.text_field)
                                            : read_text_documents(path);
  for (const std::string& d : docs) {
    try {
      const auto ids = tokenizer->encode(d, options.add_special);
      stream.insert(stream.end(), ids.begin(), ids.end());
    } catch (const Error& e) {
      throw Error(path.string() + ": " + e.what());
    }
  }
  if (documents) *documents = static_cast<int64_t>(docs.size());
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
  const std::vector<int32_t> stream = load_token_stream(path, tokenizer, options, &out.documents);
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
