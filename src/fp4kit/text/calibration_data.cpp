#include "fp4kit/text/calibration_data.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "fp4kit/error.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

namespace {

void check_readable(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error(path.string() + ": calibration data file not found (fp4kit never downloads data)");
  if (std::filesystem::is_directory(path, ec)) throw Error(path.string() + ": is a directory, not a data file");
  if (std::filesystem::file_size(path, ec) == 0 && !ec)
    throw Error(path.string() + ": calibration data file is empty");
}

// Reads a file line by line in blocks (memory: one block plus the longest line), calling
// line(text, byte offset, line number) until it returns false or the file ends. A final line
// without '\n' is a line too.
void for_each_line(const std::filesystem::path& path,
                   const std::function<bool(std::string_view, size_t, size_t)>& line) {
  check_readable(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open calibration data file");
  std::vector<char> block(size_t{1} << 20);
  std::string pending;          // the start of a line that continues in the next block
  size_t pending_offset = 0, offset = 0, line_no = 0;
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    const size_t got = static_cast<size_t>(in.gcount());
    if (got == 0) break;
    size_t pos = 0;
    while (pos < got) {
      const char* nl = static_cast<const char*>(std::memchr(block.data() + pos, '\n', got - pos));
      const size_t end = nl ? static_cast<size_t>(nl - block.data()) : got;
      if (!nl) {  // the line goes on in the next block
        if (pending.empty()) pending_offset = offset + pos;
        pending.append(block.data() + pos, end - pos);
        break;
      }
      bool more;
      if (pending.empty()) {
        more = line(std::string_view(block.data() + pos, end - pos), offset + pos, ++line_no);
      } else {
        pending.append(block.data() + pos, end - pos);
        more = line(pending, pending_offset, ++line_no);
        pending.clear();
      }
      if (!more) return;
      pos = end + 1;
    }
    offset += got;
  }
  if (!pending.empty()) line(pending, pending_offset, ++line_no);
}

void check_utf8(std::string_view data, size_t offset, const std::filesystem::path& path) {
  if (const size_t bad = find_invalid_utf8(data); bad != std::string::npos)
    throw Error(path.string() + ": not valid UTF-8 text (byte offset " + std::to_string(offset + bad) + ")");
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

// Documents of a plain text file, in order, until doc() returns false.
void for_each_text_document(const std::filesystem::path& path,
                            const std::function<bool(std::string&&)>& doc) {
  std::string current;
  bool have_lines = false, more = true, any = false;
  const auto finish = [&] {
    if (have_lines) {
      const std::string_view stripped = strip_ascii(current);
      if (!stripped.empty()) {
        any = true;
        more = doc(std::string(stripped));
      }
    }
    current.clear();
    have_lines = false;
    return more;
  };
  for_each_line(path, [&](std::string_view line, size_t offset, size_t line_no) {
    if (line_no == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") {  // UTF-8 byte-order mark
      line.remove_prefix(3);
      offset += 3;
    }
    check_utf8(line, offset, path);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // CRLF
    // Only an empty line separates documents (as text.split("\n\n") does); a line of spaces is
    // content, which keeps the stream identical to shared/data's pre-tokenized TinyStories.
    if (line.empty()) return finish();
    if (have_lines) current.push_back('\n');
    current.append(line);
    have_lines = true;
    return true;
  });
  if (more) finish();
  if (!any) throw Error(path.string() + ": calibration data file contains no text");
}

// Documents of a JSONL file (field `text_field` of each object), in order, until doc() returns
// false.
void for_each_jsonl_document(const std::filesystem::path& path, const std::string& text_field,
                             const std::function<bool(std::string&&)>& doc) {
  bool any = false;
  for_each_line(path, [&](std::string_view line, size_t, size_t line_no) {
    if (is_blank(line)) return true;
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
    if (text.empty()) return true;
    any = true;
    return doc(std::move(text));
  });
  if (!any) throw Error(path.string() + ": calibration data file contains no text");
}

// The first `max_ids` ids (0: all) of a little-endian id file; reads only those bytes.
std::vector<int32_t> read_token_prefix(const std::filesystem::path& path, int bytes_per_id,
                                       uint64_t max_ids) {
  if (bytes_per_id != 2 && bytes_per_id != 4) throw Error("token files hold 2- or 4-byte ids");
  check_readable(path);
  const uint64_t size = std::filesystem::file_size(path);
  if (size % static_cast<uint64_t>(bytes_per_id) != 0)
    throw Error(path.string() + ": size " + std::to_string(size) + " bytes is not a multiple of " +
                std::to_string(bytes_per_id) + " (little-endian uint" + std::to_string(8 * bytes_per_id) +
                " token ids expected)");
  uint64_t n = size / static_cast<uint64_t>(bytes_per_id);
  if (max_ids > 0 && n > max_ids) n = max_ids;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open calibration data file");
  std::vector<unsigned char> data(static_cast<size_t>(n) * static_cast<size_t>(bytes_per_id));
  if (!in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size())))
    throw Error(path.string() + ": read failed (the file shrank while being read?)");
  std::vector<int32_t> ids(static_cast<size_t>(n));
  const unsigned char* p = data.data();
  for (size_t i = 0; i < ids.size(); ++i) {
    uint32_t v = 0;
    for (int b = bytes_per_id - 1; b >= 0; --b) v = (v << 8) | p[i * static_cast<size_t>(bytes_per_id) + static_cast<size_t>(b)];
    if (v > static_cast<uint32_t>(INT32_MAX))
      throw Error(path.string() + ": token #" + std::to_string(i) + " = " + std::to_string(v) + " is too large");
    ids[i] = static_cast<int32_t>(v);
  }
  return ids;
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
  std::vector<std::string> docs;
  for_each_text_document(path, [&](std::string&& d) {
    docs.push_back(std::move(d));
    return true;
  });
  return docs;
}

std::vector<std::string> read_jsonl_documents(const std::filesystem::path& path, const std::string& text_field) {
  std::vector<std::string> docs;
  for_each_jsonl_document(path, text_field, [&](std::string&& d) {
    docs.push_back(std::move(d));
    return true;
  });
  return docs;
}

std::vector<int32_t> read_token_file(const std::filesystem::path& path, int bytes_per_id) {
  return read_token_prefix(path, bytes_per_id, 0);
}

std::vector<int32_t> load_token_stream(const std::filesystem::path& path, const Tokenizer* tokenizer,
                                       const CalibrationOptions& options, int64_t* documents) {
  const CalibrationFormat format = resolve_format(path, options.format);
  const uint64_t limit = options.max_tokens > 0 ? static_cast<uint64_t>(options.max_tokens) : 0;
  std::vector<int32_t> stream;
  if (documents) *documents = 0;
  if (format == CalibrationFormat::TokensU16 || format == CalibrationFormat::TokensU32) {
    stream = read_token_prefix(path, format == CalibrationFormat::TokensU16 ? 2 : 4, limit);
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
  // Documents are read and encoded one at a time, and reading stops once the stream holds
  // `limit` tokens: memory and time follow what is used, not the file's size.
  int64_t n_docs = 0;
  const auto encode = [&](std::string&& d) {
    try {
      const auto ids = tokenizer->encode(d, options.add_special);
      stream.insert(stream.end(), ids.begin(), ids.end());
    } catch (const Error& e) {
      throw Error(path.string() + ": " + e.what());
    }
    ++n_docs;
    return limit == 0 || stream.size() < limit;
  };
  if (format == CalibrationFormat::Jsonl) for_each_jsonl_document(path, options.text_field, encode);
  else for_each_text_document(path, encode);
  if (limit > 0 && stream.size() > limit) stream.resize(static_cast<size_t>(limit));
  if (documents) *documents = n_docs;
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
  const std::vector<int32_t> stream = load_token_stream(path, tokenizer, read, &out.documents);
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
