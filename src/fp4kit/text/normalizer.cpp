#include "fp4kit/text/normalizer.hpp"

#include "fp4kit/error.hpp"
#include "fp4kit/text/regex.hpp"
#include "fp4kit/text/tokenizer_json.hpp"
#include "fp4kit/text/unicode.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

Normalizer::Normalizer() = default;
Normalizer::~Normalizer() = default;
Normalizer::Normalizer(Normalizer&&) noexcept = default;
Normalizer& Normalizer::operator=(Normalizer&&) noexcept = default;

Normalizer Normalizer::parse(const nlohmann::json& j, const std::string& file) {
  Normalizer n;
  if (!j.is_null()) n.add(j, file);
  return n;
}

void Normalizer::add(const nlohmann::json& j, const std::string& file) {
  const std::string type = json_type_of(j, file, "normalizer");
  const auto unsupported = [&] {
    return Error(file + ": normalizer type '" + type +
                 "' is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, "
                 "Prepend, Append, Replace, Strip)");
  };
  if (type == "Sequence") {
    for (const auto& sub : json_array_at(j, "normalizers", file, "normalizer Sequence")) add(sub, file);
  } else if (type == "NFC") {
    steps_.push_back({Kind::NFC, {}, {}});
  } else if (type == "NFD") {
    steps_.push_back({Kind::NFD, {}, {}});
  } else if (type == "NFKC") {
    steps_.push_back({Kind::NFKC, {}, {}});
  } else if (type == "NFKD") {
    steps_.push_back({Kind::NFKD, {}, {}});
  } else if (type == "Lowercase") {
    steps_.push_back({Kind::Lowercase, {}, {}});
  } else if (type == "Prepend") {
    steps_.push_back({Kind::Prepend, json_string_at(j, "prepend", file, "normalizer Prepend"), {}});
  } else if (type == "Append") {
    steps_.push_back({Kind::Append, json_string_at(j, "append", file, "normalizer Append"), {}});
  } else if (type == "Replace") {
    const std::string content = json_string_at(j, "content", file, "normalizer Replace");
    const SplitPattern pattern = parse_split_pattern(j, file, "normalizer Replace");
    Step step{pattern.is_regex ? Kind::ReplaceRegex : Kind::ReplaceString, pattern.text, content};
    if (pattern.is_regex) {
      step.regex = std::make_shared<Regex>(pattern.text, file + ": normalizer Replace");
    } else if (pattern.text.empty()) {
      throw Error(file + ": normalizer Replace has an empty pattern");
    }
    steps_.push_back(std::move(step));
  } else if (type == "Strip") {
    Step step{Kind::Strip, {}, {}};
    step.left = j.value("strip_left", false);
    step.right = j.value("strip_right", false);
    steps_.push_back(std::move(step));
  } else {
    throw unsupported();
  }
}

std::string Normalizer::apply(std::string_view input, bool at_start, bool at_end) const {
  std::string s(input);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::NFC: s = normalize_unicode(s, NormalForm::NFC); break;
      case Kind::NFD: s = normalize_unicode(s, NormalForm::NFD); break;
      case Kind::NFKC: s = normalize_unicode(s, NormalForm::NFKC); break;
      case Kind::NFKD: s = normalize_unicode(s, NormalForm::NFKD); break;
      case Kind::Lowercase: s = to_lower_unicode(s); break;
      case Kind::Prepend:
        // Hugging Face prepends only to non-empty text.
        if (at_start && !s.empty()) s = step.a + s;
        break;
      case Kind::Append:
        if (at_end && !s.empty()) s += step.a;
        break;
      case Kind::ReplaceString: s = replace_all(s, step.a, step.b); break;
      case Kind::ReplaceRegex: {
        std::string out;
        size_t prev = 0;
        for (const auto& [b, e] : step.regex->find_all(s)) {
          out.append(s, prev, b - prev);
          out += step.b;
          prev = e;
        }
        out.append(s, prev, std::string::npos);
        s = std::move(out);
        break;
      }
      case Kind::Strip: s = std::string(strip_whitespace(s, step.left && at_start, step.right && at_end)); break;
    }
  }
  return s;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t prev = 0;
  for (size_t pos = s.find(from); pos != std::string_view::npos; pos = s.find(from, prev)) {
    out.append(s.substr(prev, pos - prev));
    out.append(to);
    prev = pos + from.size();
  }
  out.append(s.substr(prev));
  return out;
}

std::string_view strip_whitespace(std::string_view s, bool left, bool right) {
  if (left) {
    size_t pos = 0;
    while (pos < s.size()) {
      size_t next = pos;
      if (!is_whitespace(next_code_point(s, next))) break;
      pos = next;
    }
    s.remove_prefix(pos);
  }
  if (right) {
    while (!s.empty()) {
      size_t start = s.size() - 1;
      while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      size_t pos = start;
      if (!is_whitespace(next_code_point(s, pos))) break;
      s = s.substr(0, start);
    }
  }
  return s;
}

}  // namespace fp4kit::text
