#include "fp4kit/text/bpe_model.hpp"

#include <algorithm>
#include <cstdio>
#include <queue>

#include "fp4kit/error.hpp"
#include "fp4kit/text/tokenizer_file.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

BpeModel::BpeModel(BpeModel&& o) noexcept { *this = std::move(o); }

BpeModel& BpeModel::operator=(BpeModel&& o) noexcept {
  vocab_ = std::move(o.vocab_);
  merges_ = std::move(o.merges_);
  unk_id_ = o.unk_id_;
  fuse_unk_ = o.fuse_unk_;
  byte_fallback_ = o.byte_fallback_;
  ignore_merges_ = o.ignore_merges_;
  continuing_subword_prefix_ = std::move(o.continuing_subword_prefix_);
  end_of_word_suffix_ = std::move(o.end_of_word_suffix_);
  std::copy(std::begin(o.byte_ids_), std::end(o.byte_ids_), std::begin(byte_ids_));
  cache_ = std::move(o.cache_);
  return *this;
}

BpeModel BpeModel::parse(const nlohmann::json& m, const std::string& file, TokenizerFile* extracted) {
  if (!m.is_object()) throw Error(file + ": 'model' must be an object");
  std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "";
  if (type.empty() && (m.contains("merges") || (extracted && extracted->merges_extracted)))
    type = "BPE";  // very old files omit the type
  if (type != "BPE")
    throw Error(file + ": model type '" + type + "' is not supported (supported: BPE)");
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0.0)
    throw Error(file + ": model BPE with dropout > 0 is not supported (encoding would be random)");

  BpeModel bpe;
  if (extracted && extracted->vocab_extracted) {
    bpe.vocab_ = std::move(extracted->vocab);
  } else {
    const auto& vocab = m.contains("vocab") ? m["vocab"] : nlohmann::json();
    if (!vocab.is_object()) throw Error(file + ": model BPE needs an object 'vocab'");
    bpe.vocab_.reserve(vocab.size());
    for (const auto& [token, id] : vocab.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        throw Error(file + ": model vocab entry '" + token + "' has no valid id");
      bpe.vocab_.emplace(token, id.get<int32_t>());
    }
  }

  const auto str_opt = [&](const char* key) {
    return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : std::string();
  };
  bpe.continuing_subword_prefix_ = str_opt("continuing_subword_prefix");
  bpe.end_of_word_suffix_ = str_opt("end_of_word_suffix");
  bpe.fuse_unk_ = m.value("fuse_unk", false);
  bpe.byte_fallback_ = m.value("byte_fallback", false);
  bpe.ignore_merges_ = m.value("ignore_merges", false);
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    const std::string unk = m["unk_token"].get<std::string>();
    const auto it = bpe.vocab_.find(unk);
    if (it == bpe.vocab_.end()) throw Error(file + ": model unk_token '" + unk + "' is not in the vocabulary");
    bpe.unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const auto it = bpe.vocab_.find(std::string_view(name));
    bpe.byte_ids_[b] = it == bpe.vocab_.end() ? -1 : it->second;
  }

  // Merges come as "left right" strings (older files) or ["left", "right"] pairs (newer).
  std::vector<std::pair<std::string, std::string>> local;
  const std::vector<std::pair<std::string, std::string>>* merges = &local;
  if (extracted && extracted->merges_extracted) {
    if (!extracted->merges_error.empty()) throw Error(file + ": " + extracted->merges_error);
    merges = &extracted->merges;
  } else if (m.contains("merges")) {
    const auto& mj = m["merges"];
    if (!mj.is_array()) throw Error(file + ": model BPE 'merges' must be an array");
    for (const auto& entry : mj) {
      const std::string where = file + ": merge #" + std::to_string(local.size());
      if (entry.is_string()) {
        const std::string& s = entry.get_ref<const std::string&>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          throw Error(where + " '" + s + "' is not two tokens separated by a space");
        local.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
        local.emplace_back(entry[0].get<std::string>(), entry[1].get<std::string>());
      } else {
        throw Error(where + " is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
  }
  bpe.merges_.reserve(merges->size());
  const size_t prefix_len = bpe.continuing_subword_prefix_.size();
  std::string merged;
  int32_t rank = 0;
  for (const auto& [left, right] : *merges) {
    const auto lookup = [&](std::string_view tok) {
      const auto it = bpe.vocab_.find(tok);
      if (it == bpe.vocab_.end())
        throw Error(file + ": merge #" + std::to_string(rank) + " uses '" + std::string(tok) +
                    "', which is not in the vocabulary");
      return it->second;
    };
    const int32_t a = lookup(left), b = lookup(right);
    merged.assign(left);
    merged.append(right, std::min(prefix_len, right.size()), std::string::npos);
    const int32_t merged_id = lookup(merged);
    // Like HF's HashMap collect: a repeated pair keeps its last rank.
    bpe.merges_[pair_key(a, b)] = Merge{rank, merged_id};
    ++rank;
  }
  if (extracted) extracted->merges.clear();
  return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheLimit) cache_.clear();
    cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + static_cast<long>(first), out.end()));
  }
}

// Port of HF BPE::merge_word + Word::merge_all: characters become symbols (vocab pieces, byte
// fallback pieces or unk), then the lowest-rank adjacent pair is merged first, ties going to the
// leftmost position, until no adjacent pair has a merge.
void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int prev, next;
    size_t len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  const auto add = [&](int32_t id, size_t len) {
    const int n = static_cast<int>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  };

  // Pending unk symbol (HF fuses consecutive unknown characters into one when fuse_unk is set).
  int32_t unk_pending = -1;
  size_t unk_len = 0;
  std::string scratch;
  size_t pos = 0;
  while (pos < w.size()) {
    const size_t begin = pos;
    const size_t len = utf8_sequence_length(static_cast<unsigned char>(w[pos]));
    pos += len;
    std::string_view ch = w.substr(begin, len);
    const bool is_first = begin == 0, is_last = pos >= w.size();
    if ((!is_first && !continuing_subword_prefix_.empty()) || (is_last && !end_of_word_suffix_.empty())) {
      scratch.clear();
      if (!is_first) scratch += continuing_subword_prefix_;
      scratch += ch;
      if (is_last) scratch += end_of_word_suffix_;
      ch = scratch;
    }
    const auto it = vocab_.find(ch);
    if (it != vocab_.end()) {
      if (unk_pending >= 0) {
        add(unk_pending, unk_len);
        unk_pending = -1;
      }
      add(it->second, len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // As in HF, a pending unk is not flushed here (it is added later).
        for (char c : ch) add(byte_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (unk_id_) {
      if (unk_pending >= 0 && fuse_unk_) {
        unk_len += len;
      } else {
        if (unk_pending >= 0) add(unk_pending, unk_len);
        unk_pending = *unk_id_;
        unk_len = len;
      }
    }
    // Without an unk token the character is dropped, as HF does.
  }
  if (unk_pending >= 0) add(unk_pending, unk_len);

  struct QueueEntry {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator<(const QueueEntry& o) const {  // max-heap order: "less" = later to pop
      if (rank != o.rank) return rank > o.rank;
      return pos > o.pos;
    }
  };
  std::priority_queue<QueueEntry> queue;
  const auto find_merge = [&](int32_t a, int32_t b) -> const Merge* {
    const auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id))
      queue.push({m->rank, static_cast<int>(i), m->new_id});

  while (!queue.empty()) {
    const QueueEntry top = queue.top();
    queue.pop();
    Symbol& cur = symbols[static_cast<size_t>(top.pos)];
    if (cur.len == 0 || cur.next == -1) continue;
    const int next_pos = cur.next;
    const Symbol right = symbols[static_cast<size_t>(next_pos)];
    const Merge* m = find_merge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale entry

    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[static_cast<size_t>(next_pos)].len = 0;
    if (right.next > -1 && static_cast<size_t>(right.next) < symbols.size())
      symbols[static_cast<size_t>(right.next)].prev = top.pos;

    if (cur.prev >= 0) {
      const Symbol& prev = symbols[static_cast<size_t>(cur.prev)];
      if (const Merge* pm = find_merge(prev.id, cur.id)) queue.push({pm->rank, cur.prev, pm->new_id});
    }
    if (cur.next >= 0 && static_cast<size_t>(cur.next) < symbols.size()) {
      const Symbol& nxt = symbols[static_cast<size_t>(cur.next)];
      if (const Merge* nm = find_merge(cur.id, nxt.id)) queue.push({nm->rank, top.pos, nm->new_id});
    }
  }
  for (const Symbol& s : symbols)
    if (s.len != 0) out.push_back(s.id);
}

}  // namespace fp4kit::text
