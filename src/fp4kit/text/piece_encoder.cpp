#include "fp4kit/text/piece_encoder.hpp"

#include "fp4kit/text/tokenizer.hpp"

namespace fp4kit::text {

namespace {

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

PieceEncoder::PieceEncoder(const Tokenizer& tokenizer, bool add_special, bool strip_ascii_whitespace,
                           size_t piece_bytes)
    : tok_(tokenizer),
      add_special_(add_special),
      strip_(strip_ascii_whitespace),
      piece_(piece_bytes < 1024 ? 1024 : piece_bytes),
      search_(piece_ / 16) {}

void PieceEncoder::append(std::string_view fragment, std::vector<int32_t>& out) {
  while (!fragment.empty()) {
    if (strip_ && !started_ && buf_.empty()) {
      size_t b = 0;
      while (b < fragment.size() && is_ascii_space(fragment[b])) ++b;
      fragment.remove_prefix(b);
    }
    // At most a piece at a time, so one huge fragment costs no more than many small ones.
    const size_t take = std::min(fragment.size(), piece_);
    buf_.append(fragment.substr(0, take));
    fragment.remove_prefix(take);
    while (buf_.size() >= piece_ + search_ + kCheckBytes) encode_piece(out);
  }
}

bool PieceEncoder::splits_at(size_t c) const {
  size_t a = c > kCheckBytes ? c - kCheckBytes : 0;
  while (a < c && is_continuation(buf_[a])) ++a;
  size_t b = std::min(buf_.size(), c + kCheckBytes);
  while (b > c && b < buf_.size() && is_continuation(buf_[b])) --b;
  const std::string_view all(buf_);
  const bool begins = !started_ && a == 0;
  std::vector<int32_t> whole, parts;
  tok_.encode_part(all.substr(a, b - a), begins, false, false, whole);
  tok_.encode_part(all.substr(a, c - a), begins, false, false, parts);
  tok_.encode_part(all.substr(c, b - c), false, false, false, parts);
  return whole == parts;
}

void PieceEncoder::encode_piece(std::vector<int32_t>& out) {
  const size_t lo = piece_, hi = piece_ + search_;
  size_t cut = 0;
  int tries = 0;
  for (size_t p = buf_.find(' ', lo); cut == 0 && p < hi && tries < 16; p = buf_.find(' ', p + 1)) {
    if (is_ascii_space(buf_[p - 1]) || is_ascii_space(buf_[p + 1])) continue;
    ++tries;
    if (splits_at(p)) cut = p;
  }
  tries = 0;
  for (size_t p = lo; cut == 0 && p < hi && tries < 256; ++p) {
    if (is_continuation(buf_[p])) continue;
    ++tries;
    if (splits_at(p)) cut = p;
  }
  if (cut == 0) {
    cut = lo;
    while (is_continuation(buf_[cut])) ++cut;
    ++forced_cuts_;
  }
  tok_.encode_part(std::string_view(buf_).substr(0, cut), !started_, false, add_special_, out);
  buf_.erase(0, cut);
  started_ = true;
}

bool PieceEncoder::finish(std::vector<int32_t>& out) {
  if (strip_)
    while (!buf_.empty() && is_ascii_space(buf_.back())) buf_.pop_back();
  const bool any = started_ || !buf_.empty();
  if (any) tok_.encode_part(buf_, !started_, true, add_special_, out);
  buf_.clear();
  started_ = false;
  return any;
}

std::string forced_cuts_warning(const std::filesystem::path& data, uint64_t cuts) {
  if (cuts == 0) return {};
  return data.string() + ": " + std::to_string(cuts) +
         " piece(s) of a long document were cut inside a 64 KiB run where the tokenizer never "
         "splits (e.g. a very long word): the token ids next to each such cut can differ from "
         "encoding the document whole";
}

}  // namespace fp4kit::text
