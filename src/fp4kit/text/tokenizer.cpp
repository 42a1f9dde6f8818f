#include "fp4kit/text/tokenizer.hpp"

#include <algorithm>
#include <unordered_map>

#include "fp4kit/error.hpp"
#include "fp4kit/text/added_tokens.hpp"
#include "fp4kit/text/bpe_model.hpp"
#include "fp4kit/text/decoder.hpp"
#include "fp4kit/text/normalizer.hpp"
#include "fp4kit/text/post_processor.hpp"
#include "fp4kit/text/pre_tokenizer.hpp"
#include "fp4kit/text/tokenizer_file.hpp"
#include "fp4kit/text/tokenizer_json.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

struct Tokenizer::Impl {
  std::filesystem::path json_path;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  BpeModel model;
  Decoder decoder;
  SpecialTokenFrame frame;
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;  // id -> index in `added`
  AddedTokenMatcher raw_matcher;         // tokens with normalized = false: matched on the input
  AddedTokenMatcher normalized_matcher;  // normalized = true: matched after normalization
  std::vector<std::string> id_to_token;  // model vocabulary and added tokens
  int32_t bos = -1, eos = -1, pad = -1;
  std::vector<int32_t> eos_list;

  void encode_text(std::string_view text, bool at_input_start, std::vector<int32_t>& out) const;
};

namespace {

AddedToken parse_added_token(const nlohmann::json& j, const std::string& file) {
  if (!j.is_object() || !j.contains("id") || !j["id"].is_number_integer() || !j.contains("content") ||
      !j["content"].is_string())
    throw Error(file + ": added_tokens entry without integer 'id' and string 'content'");
  AddedToken t;
  t.id = j["id"].get<int32_t>();
  t.content = j["content"].get<std::string>();
  t.special = j.value("special", false);
  t.lstrip = j.value("lstrip", false);
  t.rstrip = j.value("rstrip", false);
  t.single_word = j.value("single_word", false);
  // HF's default: special tokens are matched on the raw text, others after normalization.
  t.normalized = j.value("normalized", !t.special);
  return t;
}

// A token named in tokenizer_config.json: "<s>" or {"content": "<s>", ...} or null.
std::optional<std::string> config_token(const nlohmann::json& cfg, const char* key) {
  if (!cfg.contains(key)) return std::nullopt;
  const auto& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

std::vector<int32_t> id_list(const nlohmann::json& v) {
  std::vector<int32_t> out;
  if (v.is_number_integer()) out.push_back(v.get<int32_t>());
  if (v.is_array())
    for (const auto& e : v)
      if (e.is_number_integer()) out.push_back(e.get<int32_t>());
  return out;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  std::filesystem::path json_path = path;
  if (std::filesystem::is_directory(path)) {
    json_path = path / "tokenizer.json";
    if (!std::filesystem::exists(json_path))
      throw Error(path.string() + ": no tokenizer.json in this directory (fp4kit reads the Hugging Face "
                  "tokenizer.json format only)");
  } else if (!std::filesystem::exists(path)) {
    throw Error(path.string() + ": tokenizer file not found");
  }
  const std::string file = json_path.string();
  TokenizerFile parsed = read_tokenizer_file(json_path);
  const nlohmann::json& j = parsed.doc;
  if (!j.is_object() || !j.contains("model")) throw Error(file + ": not a tokenizer.json (no 'model')");

  auto impl = std::make_unique<Impl>();
  impl->json_path = json_path;
  const auto field = [&](const char* key) -> const nlohmann::json& {
    static const nlohmann::json null_value;
    return j.contains(key) ? j[key] : null_value;
  };
  impl->normalizer = Normalizer::parse(field("normalizer"), file);
  impl->pre_tokenizer = PreTokenizer::parse(field("pre_tokenizer"), file);
  impl->model = BpeModel::parse(j["model"], file, &parsed);
  impl->decoder = Decoder::parse(field("decoder"), file);
  impl->frame = parse_post_processor(field("post_processor"), file);

  int32_t max_id = -1;
  for (const auto& [token, id] : impl->model.vocab()) max_id = std::max(max_id, id);
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& e : j["added_tokens"]) {
      AddedToken t = parse_added_token(e, file);
      max_id = std::max(max_id, t.id);
      impl->added_by_id[t.id] = impl->added.size();
      impl->added.push_back(std::move(t));
    }
  }
  for (const AddedToken& t : impl->added) {
    if (t.normalized) impl->normalized_matcher.add(t, impl->normalizer.apply(t.content));
    else impl->raw_matcher.add(t, t.content);
  }
  impl->id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : impl->model.vocab()) impl->id_to_token[static_cast<size_t>(id)] = token;
  for (const AddedToken& t : impl->added) impl->id_to_token[static_cast<size_t>(t.id)] = t.content;

  // Side files next to tokenizer.json give BOS/EOS/PAD and the add_bos/add_eos switches.
  const std::filesystem::path dir = json_path.parent_path();
  nlohmann::json tok_cfg = nlohmann::json::object(), gen_cfg = nlohmann::json::object();
  if (std::filesystem::exists(dir / "tokenizer_config.json")) tok_cfg = read_json_file(dir / "tokenizer_config.json");
  if (std::filesystem::exists(dir / "generation_config.json")) gen_cfg = read_json_file(dir / "generation_config.json");
  Tokenizer tok(std::move(impl));
  Impl& im = *tok.impl_;
  const auto lookup = [&](const std::string& t) -> int32_t {
    const auto id = tok.token_to_id(t);
    return id ? *id : -1;
  };
  if (tok_cfg.contains("bos_token")) {
    if (const auto t = config_token(tok_cfg, "bos_token")) im.bos = lookup(*t);
  } else if (gen_cfg.contains("bos_token_id") && gen_cfg["bos_token_id"].is_number_integer()) {
    im.bos = gen_cfg["bos_token_id"].get<int32_t>();
  }
  if (const auto t = config_token(tok_cfg, "eos_token")) im.eos = lookup(*t);
  if (gen_cfg.contains("eos_token_id")) im.eos_list = id_list(gen_cfg["eos_token_id"]);
  if (im.eos < 0 && !im.eos_list.empty()) im.eos = im.eos_list.front();
  if (im.eos >= 0 && std::find(im.eos_list.begin(), im.eos_list.end(), im.eos) == im.eos_list.end())
    im.eos_list.push_back(im.eos);
  if (const auto t = config_token(tok_cfg, "pad_token")) im.pad = lookup(*t);
  else if (gen_cfg.contains("pad_token_id") && gen_cfg["pad_token_id"].is_number_integer())
    im.pad = gen_cfg["pad_token_id"].get<int32_t>();

  if (tok_cfg.value("add_bos_token", false) && im.bos >= 0 &&
      (im.frame.prefix.empty() || im.frame.prefix.front() != im.bos))
    im.frame.prefix.insert(im.frame.prefix.begin(), im.bos);
  if (tok_cfg.value("add_eos_token", false) && im.eos >= 0 &&
      (im.frame.suffix.empty() || im.frame.suffix.back() != im.eos))
    im.frame.suffix.push_back(im.eos);
  return tok;
}

void Tokenizer::Impl::encode_text(std::string_view text, bool at_input_start, std::vector<int32_t>& out) const {
  std::vector<std::string> words;
  pre_tokenizer.apply(text, at_input_start, words);
  for (const std::string& w : words) model.tokenize(w, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  encode_part(text, true, true, add_special, ids);
  return ids;
}

void Tokenizer::encode_part(std::string_view text, bool begins, bool ends, bool add_special,
                            std::vector<int32_t>& ids) const {
  const Impl& im = *impl_;
  if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
    throw Error("tokenizer " + im.json_path.string() + ": input text is not valid UTF-8 (byte offset " +
                std::to_string(bad) + ")");
  if (add_special && begins) ids.insert(ids.end(), im.frame.prefix.begin(), im.frame.prefix.end());

  // Same order as HF: raw-text added tokens, then normalization of the stretches between them,
  // then added tokens that match the normalized text, then pre-tokenizer and model.
  const std::vector<TextSegment> segments =
      im.raw_matcher.empty() ? std::vector<TextSegment>{{0, text.size(), -1}} : im.raw_matcher.split(text);
  for (const TextSegment& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    const bool at_start = begins && seg.begin == 0;
    const std::string normalized = im.normalizer.apply(text.substr(seg.begin, seg.end - seg.begin),
                                                       seg.begin > 0 || begins, seg.end < text.size() || ends);
    if (im.normalized_matcher.empty()) {
      im.encode_text(normalized, at_start, ids);
      continue;
    }
    for (const TextSegment& sub : im.normalized_matcher.split(normalized)) {
      if (sub.id >= 0) ids.push_back(sub.id);
      else im.encode_text(std::string_view(normalized).substr(sub.begin, sub.end - sub.begin), at_start && sub.begin == 0, ids);
    }
  }
  if (add_special && ends) ids.insert(ids.end(), im.frame.suffix.begin(), im.frame.suffix.end());
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& im = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= im.id_to_token.size()) continue;
    const auto it = im.added_by_id.find(id);
    if (it != im.added_by_id.end()) {
      if (skip_special && im.added[it->second].special) continue;
      tokens.push_back(im.added[it->second].content);
      continue;
    }
    const std::string& t = im.id_to_token[static_cast<size_t>(id)];
    if (!t.empty()) tokens.push_back(t);
  }
  return im.decoder.decode(std::move(tokens));
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
const std::vector<int32_t>& Tokenizer::eos_ids() const { return impl_->eos_list; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }
const std::vector<int32_t>& Tokenizer::special_prefix() const { return impl_->frame.prefix; }
const std::vector<int32_t>& Tokenizer::special_suffix() const { return impl_->frame.suffix; }
size_t Tokenizer::vocab_size() const { return impl_->id_to_token.size(); }
const std::filesystem::path& Tokenizer::json_path() const { return impl_->json_path; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& t : impl_->added)
    if (t.content == token) return t.id;
  return impl_->model.token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) return std::nullopt;
  const auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  const std::string& t = impl_->id_to_token[static_cast<size_t>(id)];
  if (t.empty()) return std::nullopt;
  return t;
}

bool Tokenizer::is_special(int32_t id) const {
  const auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

}  // namespace fp4kit::text
