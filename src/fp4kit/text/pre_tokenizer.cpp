#include "fp4kit/text/pre_tokenizer.hpp"

#include <algorithm>

#include "fp4kit/error.hpp"
#include "fp4kit/text/byte_level.hpp"
#include "fp4kit/text/normalizer.hpp"
#include "fp4kit/text/regex.hpp"
#include "fp4kit/text/tokenizer_json.hpp"
#include "fp4kit/text/unicode.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

namespace {

// GPT-2's word regex, which ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

SplitBehavior parse_behavior(const nlohmann::json& j, const std::string& file) {
  const std::string b = json_string_at(j, "behavior", file, "pre_tokenizer Split");
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  throw Error(file + ": pre_tokenizer Split has unknown behavior '" + b + "'");
}

// Spans of `s` whose characters satisfy `pred` one by one (HF's char-predicate patterns: each
// matching character is its own match).
template <class Pred>
std::vector<Span> spans_from_predicate(std::string_view s, Pred pred) {
  std::vector<std::pair<size_t, size_t>> matches;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t begin = pos;
    if (pred(next_code_point(s, pos))) matches.emplace_back(begin, pos);
  }
  return spans_from_matches(s, matches);
}

}  // namespace

std::vector<Span> spans_from_matches(std::string_view s, const std::vector<std::pair<size_t, size_t>>& matches) {
  std::vector<Span> spans;
  if (s.empty()) return {{0, 0, false}};
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  }
  if (prev != s.size()) spans.push_back({prev, s.size(), false});
  return spans;
}

std::vector<std::pair<size_t, size_t>> apply_split_behavior(const std::vector<Span>& spans, SplitBehavior behavior) {
  std::vector<std::pair<size_t, size_t>> out;
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (const Span& s : spans) out.emplace_back(s.begin, s.end);
      break;
    case SplitBehavior::Removed:
      for (const Span& s : spans)
        if (!s.is_match) out.emplace_back(s.begin, s.end);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      // Mirror image of MergedWithPrevious: walk from the end.
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->begin;
        } else {
          out.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  out.erase(std::remove_if(out.begin(), out.end(), [](const auto& r) { return r.first == r.second; }), out.end());
  return out;
}

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

PreTokenizer PreTokenizer::parse(const nlohmann::json& j, const std::string& file) {
  PreTokenizer p;
  if (!j.is_null()) p.add(j, file);
  return p;
}

void PreTokenizer::add(const nlohmann::json& j, const std::string& file) {
  const std::string type = json_type_of(j, file, "pre_tokenizer");
  if (type == "Sequence") {
    for (const auto& sub : json_array_at(j, "pretokenizers", file, "pre_tokenizer Sequence")) add(sub, file);
  } else if (type == "Split") {
    Step step{Kind::Split};
    const SplitPattern pattern = parse_split_pattern(j, file, "pre_tokenizer Split");
    step.regex = std::make_shared<Regex>(pattern.is_regex ? pattern.text : regex_escape(pattern.text),
                                         file + ": pre_tokenizer Split");
    step.behavior = parse_behavior(j, file);
    step.invert = j.value("invert", false);
    steps_.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    Step step{Kind::ByteLevel};
    step.add_prefix_space = j.value("add_prefix_space", true);
    if (j.value("use_regex", true)) step.regex = std::make_shared<Regex>(kGpt2Pattern, file + ": pre_tokenizer ByteLevel");
    steps_.push_back(std::move(step));
    byte_level_ = true;
  } else if (type == "Metaspace") {
    Step step{Kind::Metaspace};
    step.replacement = j.contains("replacement") ? json_string_at(j, "replacement", file, "pre_tokenizer Metaspace")
                                                 : std::string("\u2581");
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      const std::string scheme = j["prepend_scheme"].get<std::string>();
      if (scheme == "always") step.prepend_scheme = 0;
      else if (scheme == "first") step.prepend_scheme = 1;
      else if (scheme == "never") step.prepend_scheme = 2;
      else throw Error(file + ": pre_tokenizer Metaspace has unknown prepend_scheme '" + scheme + "'");
    } else {
      // Older files carry add_prefix_space instead of prepend_scheme.
      step.prepend_scheme = j.value("add_prefix_space", true) ? 0 : 2;
    }
    step.split = j.value("split", true);
    steps_.push_back(std::move(step));
  } else if (type == "Digits") {
    Step step{Kind::Digits};
    step.individual_digits = j.value("individual_digits", false);
    steps_.push_back(std::move(step));
  } else if (type == "Whitespace") {
    Step step{Kind::Whitespace};
    step.regex = std::make_shared<Regex>(R"(\w+|[^\w\s]+)", file + ": pre_tokenizer Whitespace");
    steps_.push_back(std::move(step));
  } else if (type == "WhitespaceSplit") {
    steps_.push_back(Step{Kind::WhitespaceSplit});
  } else {
    throw Error(file + ": pre_tokenizer type '" + type +
                "' is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, "
                "WhitespaceSplit)");
  }
}

void PreTokenizer::apply(std::string_view text, bool at_input_start, std::vector<std::string>& words) const {
  if (steps_.empty()) {
    if (!text.empty()) words.emplace_back(text);
    return;
  }
  std::vector<Piece> pieces;
  pieces.push_back({std::string(text), at_input_start});
  for (const Step& step : steps_) run_step(step, pieces);
  for (Piece& p : pieces)
    if (!p.text.empty()) words.push_back(std::move(p.text));
}

void PreTokenizer::run_step(const Step& step, std::vector<Piece>& pieces) const {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  const auto emit = [&](const Piece& p, const std::vector<std::pair<size_t, size_t>>& ranges) {
    for (const auto& [b, e] : ranges) out.push_back({p.text.substr(b, e - b), p.at_start && b == 0});
  };
  for (Piece& p : pieces) {
    switch (step.kind) {
      case Kind::Split: {
        auto spans = spans_from_matches(p.text, step.regex->find_all(p.text));
        if (step.invert)
          for (Span& s : spans) s.is_match = !s.is_match;
        emit(p, apply_split_behavior(spans, step.behavior));
        break;
      }
      case Kind::ByteLevel: {
        if (step.add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(p.text.begin(), ' ');
        if (step.regex) {
          const auto ranges =
              apply_split_behavior(spans_from_matches(p.text, step.regex->find_all(p.text)), SplitBehavior::Isolated);
          for (const auto& [b, e] : ranges)
            out.push_back({bytes_to_byte_level(std::string_view(p.text).substr(b, e - b)), p.at_start && b == 0});
        } else {
          out.push_back({bytes_to_byte_level(p.text), p.at_start});
        }
        break;
      }
      case Kind::Metaspace: {
        std::string t = replace_all(p.text, " ", step.replacement);
        const bool starts = t.compare(0, step.replacement.size(), step.replacement) == 0;
        if (!starts && (step.prepend_scheme == 0 || (step.prepend_scheme == 1 && p.at_start)))
          t.insert(0, step.replacement);
        Piece q{std::move(t), p.at_start};
        if (step.split) {
          std::vector<std::pair<size_t, size_t>> matches;
          for (size_t pos = q.text.find(step.replacement); pos != std::string::npos;
               pos = q.text.find(step.replacement, pos + step.replacement.size()))
            matches.emplace_back(pos, pos + step.replacement.size());
          emit(q, apply_split_behavior(spans_from_matches(q.text, matches), SplitBehavior::MergedWithNext));
        } else {
          out.push_back(std::move(q));
        }
        break;
      }
      case Kind::Digits: {
        const auto numeric = [](char32_t c) { return is_numeric(c); };
        emit(p, apply_split_behavior(spans_from_predicate(p.text, numeric),
                                     step.individual_digits ? SplitBehavior::Isolated : SplitBehavior::Contiguous));
        break;
      }
      case Kind::Whitespace: {
        auto spans = spans_from_matches(p.text, step.regex->find_all(p.text));
        for (Span& s : spans) s.is_match = !s.is_match;
        emit(p, apply_split_behavior(spans, SplitBehavior::Removed));
        break;
      }
      case Kind::WhitespaceSplit:
        emit(p, apply_split_behavior(spans_from_predicate(p.text, [](char32_t c) { return is_whitespace(c); }),
                                     SplitBehavior::Removed));
        break;
    }
  }
  pieces = std::move(out);
}

}  // namespace fp4kit::text
