#include "fp4kit/text/token_reader.hpp"

#include <cstring>
#include <deque>
#include <optional>

#include <nlohmann/json.hpp>

#include "fp4kit/error.hpp"
#include "fp4kit/text/piece_encoder.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

namespace {

constexpr size_t kBlockBytes = size_t{1} << 20;

void check_readable(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error(path.string() + ": calibration data file not found (fp4kit never downloads data)");
  if (std::filesystem::is_directory(path, ec)) throw Error(path.string() + ": is a directory, not a data file");
  if (std::filesystem::file_size(path, ec) == 0 && !ec)
    throw Error(path.string() + ": calibration data file is empty");
}

void check_utf8(std::string_view data, uint64_t offset, const std::filesystem::path& path) {
  if (const size_t bad = find_invalid_utf8(data); bad != std::string::npos)
    throw Error(path.string() + ": not valid UTF-8 text (byte offset " + std::to_string(offset + bad) + ")");
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

// Bytes at the end of `s` to hold back for the next block: a final '\r' (it may be half of a
// CRLF) or an incomplete UTF-8 character.
size_t held_back(std::string_view s) {
  if (s.empty()) return 0;
  if (s.back() == '\r') return 1;
  size_t i = s.size();
  while (i > 0 && s.size() - i < 3 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i == 0) return 0;
  const auto lead = static_cast<unsigned char>(s[i - 1]);
  if (lead < 0xC0) return 0;
  const size_t have = s.size() - (i - 1);
  return have < utf8_sequence_length(lead) ? have : 0;
}

}  // namespace

// ---- LineReader ---------------------------------------------------------------------------------

LineReader::LineReader(const std::filesystem::path& path) : path_(path), block_(kBlockBytes) {
  check_readable(path);
  in_.open(path, std::ios::binary);
  if (!in_) throw Error(path.string() + ": cannot open calibration data file");
}

bool LineReader::step(const Part& part) {
  if (done_) return false;
  in_.read(block_.data(), static_cast<std::streamsize>(block_.size()));
  const size_t got = static_cast<size_t>(in_.gcount());
  if (got == 0) {
    done_ = true;
    if (!work_.empty() || line_open_) part(work_, work_offset_, line_no_, true);
    work_.clear();
    return false;
  }
  work_.append(block_.data(), got);
  const std::string_view w(work_);
  size_t pos = 0;
  while (pos < w.size()) {
    const char* nl = static_cast<const char*>(std::memchr(w.data() + pos, '\n', w.size() - pos));
    if (!nl) break;
    const size_t end = static_cast<size_t>(nl - w.data());
    part(w.substr(pos, end - pos), work_offset_ + pos, line_no_++, true);
    line_open_ = false;
    pos = end + 1;
  }
  // The line goes on in the next block: hand out what is certain, hold back the rest.
  const std::string_view tail = w.substr(pos);
  const size_t keep = held_back(tail);
  if (tail.size() > keep) {
    part(tail.substr(0, tail.size() - keep), work_offset_ + pos, line_no_, false);
    line_open_ = true;
  }
  const size_t consumed = w.size() - keep;
  work_.erase(0, consumed);
  work_offset_ += consumed;
  return true;
}

// ---- documents ----------------------------------------------------------------------------------

namespace {

// Where a document's text goes: begin() when a document starts, append() for its text in order,
// finish() at its end (false: the document was empty and is not one).
struct DocumentSink {
  virtual ~DocumentSink() = default;
  virtual void begin() = 0;
  virtual void append(std::string_view text) = 0;
  virtual bool finish() = 0;
};

// The plain-text rules of calibration_data.hpp over LineReader's parts: empty lines separate
// documents, lines are joined by '\n', CRLF is read as LF, a byte-order mark is dropped.
class TextDocuments {
 public:
  TextDocuments(const std::filesystem::path& path, DocumentSink& sink) : path_(path), sink_(sink) {}

  void part(std::string_view s, uint64_t offset, size_t line_no, bool line_ends) {
    if (line_no == 1 && offset == 0 && s.substr(0, 3) == "\xEF\xBB\xBF") {  // UTF-8 byte-order mark
      s.remove_prefix(3);
      offset += 3;
    }
    check_utf8(s, offset, path_);
    if (line_ends && !s.empty() && s.back() == '\r') s.remove_suffix(1);  // CRLF
    if (!line_open_) {
      // Only an empty line separates documents (as text.split("\n\n") does); a line of spaces
      // is content, which keeps the stream identical to shared/data's pre-tokenized TinyStories.
      if (line_ends && s.empty()) return end();
      if (has_lines_) sink_.append("\n");
      else sink_.begin();
      has_lines_ = true;
    }
    sink_.append(s);
    line_open_ = !line_ends;
  }

  // Ends the current document (at an empty line or the end of the file).
  void end() {
    if (!has_lines_) return;
    has_lines_ = false;
    if (sink_.finish()) any_ = true;
  }

  bool any() const { return any_; }

 private:
  const std::filesystem::path& path_;
  DocumentSink& sink_;
  bool has_lines_ = false, line_open_ = false, any_ = false;
};

// JSONL: the string field `field` of one line's object; nullopt for a blank line.
std::optional<std::string> jsonl_document(const std::string& line, size_t line_no, const std::filesystem::path& path,
                                          const std::string& field) {
  if (is_blank(line)) return std::nullopt;
  const std::string where = path.string() + ":" + std::to_string(line_no);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": invalid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains(field) || !j[field].is_string())
    throw Error(where + ": no string field '" + field + "' (choose the field with --text-field)");
  return std::move(j[field].get_ref<std::string&>());
}

// JSONL lines, whole, from LineReader's parts.
class JsonlLines {
 public:
  // Calls line(text, line number) once the line is complete.
  template <class F>
  void part(std::string_view s, size_t line_no, bool line_ends, F&& line) {
    line_.append(s);
    if (!line_ends) return;
    const std::string whole = std::move(line_);
    line_.clear();
    line(whole, line_no);
  }

 private:
  std::string line_;
};

}  // namespace

// ---- TokenReader --------------------------------------------------------------------------------

struct TokenReader::Impl {
  // Text documents go through the piece encoder; documents are counted where they begin.
  struct EncoderSink : DocumentSink {
    Impl& im;
    explicit EncoderSink(Impl& i) : im(i) {}
    void begin() override { im.doc_starts.push_back(im.made_now()); }
    void append(std::string_view text) override { im.encoding([&] { im.encoder->append(text, im.pending); }); }
    bool finish() override {
      bool any = false;
      im.encoding([&] { any = im.encoder->finish(im.pending); });
      if (!any) im.doc_starts.pop_back();  // whitespace only: not a document
      return any;
    }
  };

  std::filesystem::path path;
  const Tokenizer* tokenizer;
  CalibrationOptions options;
  CalibrationFormat format;

  std::vector<int32_t> pending;  // ids made and not taken yet
  size_t taken = 0;              // of pending
  uint64_t made = 0;             // ids made so far (all of pending included)
  uint64_t returned = 0;
  bool done = false;

  // Text and JSONL.
  std::optional<LineReader> lines;
  std::optional<PieceEncoder> encoder;
  EncoderSink sink{*this};
  std::optional<TextDocuments> text_docs;
  JsonlLines jsonl;
  bool any_jsonl = false;
  std::deque<uint64_t> doc_starts;                // where documents not yet counted begin
  int64_t documents = 0;

  // Id files.
  std::ifstream ids_in;
  int id_bytes = 0;
  uint64_t ids_left = 0, ids_read = 0;

  Impl(const std::filesystem::path& p, const Tokenizer* t, const CalibrationOptions& o)
      : path(p), tokenizer(t), options(o), format(resolve_format(p, o.format)) {
    if (format == CalibrationFormat::TokensU16 || format == CalibrationFormat::TokensU32) {
      id_bytes = format == CalibrationFormat::TokensU16 ? 2 : 4;
      check_readable(path);
      const uint64_t size = std::filesystem::file_size(path);
      if (size % static_cast<uint64_t>(id_bytes) != 0)
        throw Error(path.string() + ": size " + std::to_string(size) + " bytes is not a multiple of " +
                    std::to_string(id_bytes) + " (little-endian uint" + std::to_string(8 * id_bytes) +
                    " token ids expected)");
      ids_left = size / static_cast<uint64_t>(id_bytes);
      ids_in.open(path, std::ios::binary);
      if (!ids_in) throw Error(path.string() + ": cannot open calibration data file");
      return;
    }
    if (tokenizer == nullptr)
      throw Error(path.string() + ": text calibration data needs a tokenizer (tokenizer.json in the model directory)");
    lines.emplace(path);
    encoder.emplace(*tokenizer, options.add_special, format == CalibrationFormat::Text);
    if (format == CalibrationFormat::Text) text_docs.emplace(path, sink);
  }

  // Runs `f` (which may encode) with tokenizer errors named after the file.
  template <class F>
  void encoding(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      throw Error(path.string() + ": " + e.what());
    }
  }

  void jsonl_line(const std::string& line, size_t line_no) {
    const auto text = jsonl_document(line, line_no, path, options.text_field);
    if (!text || text->empty()) return;
    sink.begin();
    sink.append(*text);
    sink.finish();
    any_jsonl = true;
  }

  uint64_t made_now() const { return made + pending.size(); }

  // Makes more ids into `pending` (which is empty); false at the end of the data.
  bool step() {
    if (done) return false;
    if (id_bytes) return step_ids();
    const bool more = lines->step([&](std::string_view s, uint64_t offset, size_t line_no, bool line_ends) {
      if (text_docs) text_docs->part(s, offset, line_no, line_ends);
      else jsonl.part(s, line_no, line_ends, [&](const std::string& line, size_t n) { jsonl_line(line, n); });
    });
    if (!more) {
      done = true;
      if (text_docs) text_docs->end();
      if (!(text_docs ? text_docs->any() : any_jsonl)) throw Error(path.string() + ": calibration data file contains no text");
    }
    return !pending.empty() || more;
  }

  bool step_ids() {
    const uint64_t n = std::min<uint64_t>(ids_left, kBlockBytes / 4);
    if (n == 0) {
      done = true;
      return false;
    }
    std::vector<unsigned char> data(static_cast<size_t>(n) * static_cast<size_t>(id_bytes));
    if (!ids_in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size())))
      throw Error(path.string() + ": read failed (the file shrank while being read?)");
    for (size_t i = 0; i < n; ++i) {
      uint32_t v = 0;
      for (int b = id_bytes - 1; b >= 0; --b) v = (v << 8) | data[i * static_cast<size_t>(id_bytes) + static_cast<size_t>(b)];
      const uint64_t index = ids_read + i;
      if (v > static_cast<uint32_t>(INT32_MAX))
        throw Error(path.string() + ": token #" + std::to_string(index) + " = " + std::to_string(v) + " is too large");
      if (tokenizer && v >= tokenizer->vocab_size())
        throw Error(path.string() + ": token #" + std::to_string(index) + " = " + std::to_string(v) +
                    " is outside the tokenizer's vocabulary of " + std::to_string(tokenizer->vocab_size()));
      pending.push_back(static_cast<int32_t>(v));
    }
    ids_read += n;
    ids_left -= n;
    return true;
  }
};

TokenReader::TokenReader(const std::filesystem::path& path, const Tokenizer* tokenizer, const CalibrationOptions& options)
    : impl_(std::make_unique<Impl>(path, tokenizer, options)) {}

TokenReader::~TokenReader() = default;

size_t TokenReader::read(std::vector<int32_t>& out, size_t n) {
  Impl& im = *impl_;
  size_t got = 0;
  while (got < n) {
    if (im.taken < im.pending.size()) {
      const size_t k = std::min(n - got, im.pending.size() - im.taken);
      out.insert(out.end(), im.pending.begin() + static_cast<long>(im.taken),
                 im.pending.begin() + static_cast<long>(im.taken + k));
      im.taken += k;
      got += k;
      continue;
    }
    im.made += im.pending.size();
    im.pending.clear();
    im.taken = 0;
    if (!im.step() && im.pending.empty()) break;
  }
  im.returned += got;
  while (!im.doc_starts.empty() && im.doc_starts.front() < im.returned) {
    im.doc_starts.pop_front();
    ++im.documents;
  }
  return got;
}

int64_t TokenReader::documents() const { return impl_->documents; }

uint64_t TokenReader::forced_cuts() const { return impl_->encoder ? impl_->encoder->forced_cuts() : 0; }

}  // namespace fp4kit::text

// ---- whole documents (tests, benchmarks) -------------------------------------------------------

namespace fp4kit::text {

namespace {

// Collects documents whole, stripped of ASCII whitespace at both ends.
struct StringSink : DocumentSink {
  std::vector<std::string>& docs;
  std::string current;
  explicit StringSink(std::vector<std::string>& d) : docs(d) {}
  void begin() override { current.clear(); }
  void append(std::string_view text) override { current.append(text); }
  bool finish() override {
    const size_t b = current.find_first_not_of(" \t\n\r\f\v");
    if (b == std::string::npos) return false;
    docs.push_back(current.substr(b, current.find_last_not_of(" \t\n\r\f\v") - b + 1));
    return true;
  }
};

}  // namespace

std::vector<std::string> read_text_documents(const std::filesystem::path& path) {
  std::vector<std::string> docs;
  StringSink sink(docs);
  TextDocuments text(path, sink);
  LineReader lines(path);
  while (lines.step([&](std::string_view s, uint64_t offset, size_t line_no, bool line_ends) {
    text.part(s, offset, line_no, line_ends);
  })) {
  }
  text.end();
  if (!text.any()) throw Error(path.string() + ": calibration data file contains no text");
  return docs;
}

std::vector<std::string> read_jsonl_documents(const std::filesystem::path& path, const std::string& text_field) {
  std::vector<std::string> docs;
  JsonlLines jsonl;
  LineReader lines(path);
  while (lines.step([&](std::string_view s, uint64_t, size_t line_no, bool line_ends) {
    jsonl.part(s, line_no, line_ends, [&](const std::string& line, size_t n) {
      auto text = jsonl_document(line, n, path, text_field);
      if (text && !text->empty()) docs.push_back(std::move(*text));
    });
  })) {
  }
  if (docs.empty()) throw Error(path.string() + ": calibration data file contains no text");
  return docs;
}

std::vector<int32_t> read_token_file(const std::filesystem::path& path, int bytes_per_id) {
  if (bytes_per_id != 2 && bytes_per_id != 4) throw Error("token files hold 2- or 4-byte ids");
  CalibrationOptions o;
  o.format = bytes_per_id == 2 ? CalibrationFormat::TokensU16 : CalibrationFormat::TokensU32;
  TokenReader reader(path, nullptr, o);
  std::vector<int32_t> ids;
  while (reader.read(ids, size_t{1} << 20) > 0) {
  }
  return ids;
}

}  // namespace fp4kit::text
