#include "fp4kit/text/tokenizer_file.hpp"

#include <fstream>
#include <sstream>

#include "fp4kit/error.hpp"

namespace fp4kit::text {

namespace {

using json = nlohmann::json;

// SAX handler: forwards every event to nlohmann's DOM builder except the values of
// model.vocab and model.merges, which it consumes itself and replaces by null in the DOM.
class Handler {
 public:
  explicit Handler(TokenizerFile& out) : out_(out), dom_(out.doc, /*allow_exceptions=*/true) {}

  bool null() { return mode_ == Mode::Dom ? dom_.null() : bad("null"); }
  bool boolean(bool v) { return mode_ == Mode::Dom ? dom_.boolean(v) : bad("a boolean"); }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == Mode::Vocab) return add_vocab(v);
    return mode_ == Mode::Dom ? dom_.number_integer(v) : bad("a number");
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == Mode::Vocab) return add_vocab(static_cast<int64_t>(v));
    return mode_ == Mode::Dom ? dom_.number_unsigned(v) : bad("a number");
  }
  bool number_float(json::number_float_t v, const std::string& s) {
    return mode_ == Mode::Dom ? dom_.number_float(v, s) : bad("a number");
  }
  bool string(std::string& s) {
    if (mode_ == Mode::Dom) return dom_.string(s);
    if (mode_ == Mode::Merges) {
      if (merge_depth_ == 1) {
        pair_.push_back(std::move(s));
        return true;
      }
      // "left right" form: exactly one space.
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        note_merge_error("'" + s + "' is not two tokens separated by a space");
        out_.merges.emplace_back();
      } else {
        out_.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      }
      return true;
    }
    return bad("a string");
  }
  bool binary(json::binary_t& b) { return mode_ == Mode::Dom ? dom_.binary(b) : bad("binary"); }

  bool start_object(std::size_t n) {
    if (mode_ == Mode::Dom) {
      if (depth_ == 2 && in_model_ && key_ == "vocab") {
        mode_ = Mode::Vocab;
        out_.vocab.reserve(n == static_cast<std::size_t>(-1) ? 1 << 17 : n);
        return true;
      }
      ++depth_;
      return dom_.start_object(n);
    }
    return bad("an object");
  }
  bool key(std::string& k) {
    if (mode_ == Mode::Vocab) {
      vocab_key_ = std::move(k);
      return true;
    }
    if (mode_ != Mode::Dom) return bad("a key");
    key_ = k;
    if (depth_ == 1) in_model_ = (k == "model");
    return dom_.key(k);
  }
  bool end_object() {
    if (mode_ == Mode::Vocab) {
      mode_ = Mode::Dom;
      out_.vocab_extracted = true;
      return dom_.null();
    }
    if (mode_ != Mode::Dom) return bad("an object end");
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    if (mode_ == Mode::Dom) {
      if (depth_ == 2 && in_model_ && key_ == "merges") {
        mode_ = Mode::Merges;
        merge_depth_ = 0;
        if (n != static_cast<std::size_t>(-1)) out_.merges.reserve(n);
        return true;
      }
      ++depth_;
      key_.clear();
      return dom_.start_array(n);
    }
    if (mode_ == Mode::Merges && merge_depth_ == 0) {
      merge_depth_ = 1;
      pair_.clear();
      return true;
    }
    return bad("an array");
  }
  bool end_array() {
    if (mode_ == Mode::Merges) {
      if (merge_depth_ == 1) {
        merge_depth_ = 0;
        if (pair_.size() != 2) {
          note_merge_error("is not a pair of two strings");
          out_.merges.emplace_back();
        } else {
          out_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
        }
        return true;
      }
      mode_ = Mode::Dom;
      out_.merges_extracted = true;
      return dom_.null();
    }
    if (mode_ != Mode::Dom) return bad("an array end");
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t pos, const std::string& tok, const nlohmann::detail::exception& e) {
    return dom_.parse_error(pos, tok, e);
  }

  const std::string& structure_error() const { return structure_error_; }

 private:
  enum class Mode { Dom, Vocab, Merges };

  bool add_vocab(int64_t id) {
    if (id < 0 || id > INT32_MAX) return bad("an id out of range for '" + vocab_key_ + "'");
    out_.vocab.emplace(std::move(vocab_key_), static_cast<int32_t>(id));
    return true;
  }
  void note_merge_error(const std::string& what) {
    if (out_.merges_error.empty())
      out_.merges_error = "merge #" + std::to_string(out_.merges.size()) + " " + what;
  }
  bool bad(const std::string& what) {
    structure_error_ = std::string(mode_ == Mode::Vocab ? "model vocab" : "model merges") + " holds " + what +
                       " where " + (mode_ == Mode::Vocab ? "token ids" : "merge entries") + " are expected";
    return false;
  }

  TokenizerFile& out_;
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  Mode mode_ = Mode::Dom;
  int depth_ = 0;           // nesting of DOM containers (the root object is depth 1)
  std::string key_;         // last key at the current depth
  bool in_model_ = false;   // inside the root's "model" value
  int merge_depth_ = 0;
  std::vector<std::string> pair_;
  std::string vocab_key_;
  std::string structure_error_;
};

}  // namespace

TokenizerFile read_tokenizer_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open file");
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  TokenizerFile out;
  Handler handler(out);
  bool ok = false;
  try {
    ok = json::sax_parse(text, &handler);
  } catch (const json::exception& e) {
    throw Error(path.string() + ": invalid JSON: " + e.what());
  }
  if (!ok) {
    throw Error(path.string() + ": " +
                (handler.structure_error().empty() ? std::string("invalid JSON") : handler.structure_error()));
  }
  return out;
}

}  // namespace fp4kit::text
