#include "fp4kit/text/added_tokens.hpp"

#include "fp4kit/text/unicode.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

namespace {

char32_t last_code_point(std::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return next_code_point(s, start);
}

bool is_word_char(char32_t c) { return c == '_' || is_alphanumeric(c); }

// Start of the whitespace run that ends `s` (HF space_leftmost_at_end).
size_t whitespace_run_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t p = start;
    if (!is_whitespace(next_code_point(s, p))) break;
    end = start;
  }
  return end;
}

// Length of the whitespace run that starts `s` (HF space_rightmost_at_start).
size_t whitespace_run_length(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = pos;
    if (!is_whitespace(next_code_point(s, next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

void AddedTokenMatcher::add(const AddedToken& token, std::string pattern) {
  if (pattern.empty()) return;
  by_first_byte_[static_cast<unsigned char>(pattern[0])].push_back({std::move(pattern), token});
  ++count_;
}

std::vector<TextSegment> AddedTokenMatcher::split(std::string_view s) const {
  std::vector<TextSegment> out;
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    const auto& candidates = by_first_byte_[static_cast<unsigned char>(s[pos])];
    const Entry* best = nullptr;
    for (const Entry& e : candidates) {
      if (s.compare(pos, e.pattern.size(), e.pattern) == 0 &&
          (best == nullptr || e.pattern.size() > best->pattern.size()))
        best = &e;
    }
    if (best == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + best->pattern.size();
    pos = stop;  // matching resumes after the match itself, whatever stripping does
    const AddedToken& tok = best->token;
    if (tok.single_word) {
      const bool start_ok = start == 0 || !is_word_char(last_code_point(s.substr(0, start)));
      bool stop_ok = stop == s.size();
      if (!stop_ok) {
        size_t p = stop;
        stop_ok = !is_word_char(next_code_point(s, p));
      }
      if (!start_ok || !stop_ok) continue;
    }
    if (tok.lstrip) start = std::max(whitespace_run_start(s.substr(0, start)), start_offset);
    if (tok.rstrip) stop += whitespace_run_length(s.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, tok.id});
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
  return out;
}

}  // namespace fp4kit::text
