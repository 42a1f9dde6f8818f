#include "fp4kit/export/gguf_tokenizer.hpp"

#include <fmt/core.h>

#include <fstream>
#include <map>
#include <optional>
#include <regex>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

// gguf-py TokenType.
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4,
                           kUnused = 5, kByte = 6 };

json read_json(const fs::path& path, bool required) {
  std::ifstream f(path);
  if (!f) {
    if (!required) return json::object();
    throw Error(fmt::format("{}: missing; a GGUF needs the tokenizer to run in llama.cpp",
                            path.string()));
  }
  json j = json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    throw Error(fmt::format("{}: not a JSON object", path.string()));
  return j;
}

// "<s>" or {"content": "<s>", ...} in tokenizer_config.json.
std::optional<std::string> token_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

// The llama.cpp pre-tokenizer name of a byte-level BPE's Split regex.
std::string bpe_pre(const json& tok, const fs::path& file) {
  std::vector<std::string> regexes;
  std::function<void(const json&)> walk = [&](const json& p) {
    if (!p.is_object()) return;
    if (p.value("type", "") == "Split" && p.contains("pattern") && p["pattern"].contains("Regex"))
      regexes.push_back(p["pattern"]["Regex"].get<std::string>());
    if (p.contains("pretokenizers"))
      for (const auto& q : p["pretokenizers"]) walk(q);
  };
  walk(tok.value("pre_tokenizer", json()));
  static const std::map<std::string, std::string> known = {
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       "qwen2"},
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       "llama-bpe"},
  };
  if (regexes.size() == 1)
    if (auto it = known.find(regexes[0]); it != known.end()) return it->second;
  throw Error(fmt::format("{}: byte-level BPE pre-tokenizer {} is not one fp4kit can name for "
                          "llama.cpp (it knows the Qwen2 and Llama-3 split regexes)",
                          file.string(), regexes.empty() ? "(no Split regex)" : regexes[0]));
}

}  // namespace

void add_tokenizer_metadata(GgufMetadata& m, const fs::path& dir, const ModelConfig& config) {
  const fs::path file = dir / "tokenizer.json";
  const json tok = read_json(file, true);
  const json tcfg = read_json(dir / "tokenizer_config.json", false);
  const json& model = tok.value("model", json::object());
  if (model.value("type", "") != "BPE")
    throw Error(fmt::format("{}: model type '{}'; fp4kit writes BPE tokenizers to GGUF",
                            file.string(), model.value("type", "(none)")));
  if (!model.contains("vocab") || !model["vocab"].is_object())
    throw Error(fmt::format("{}: model.vocab missing", file.string()));
  const bool spm = model.value("byte_fallback", false);

  // id -> (text, type); added tokens override.
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;
  for (const auto& [text, id] : model["vocab"].items()) {
    int32_t type = kNormal;
    if (spm && std::regex_match(text, std::regex("<0x[0-9A-Fa-f]{2}>"))) type = kByte;
    by_id[id.get<int64_t>()] = {text, type};
  }
  std::map<std::string, int64_t> id_of;
  for (const auto& a : tok.value("added_tokens", json::array())) {
    const int64_t id = a.at("id").get<int64_t>();
    const std::string text = a.at("content").get<std::string>();
    by_id[id] = {text, a.value("special", false) ? kControl : kUserDefined};
  }
  const std::string unk = model.value("unk_token", json()).is_string()
                              ? model["unk_token"].get<std::string>() : std::string();
  int64_t n = config.vocab_size;
  if (!by_id.empty() && by_id.rbegin()->first >= n) {
    if (n > 0)
      throw Error(fmt::format("{}: token id {} ('{}') is past config.json vocab_size {} (the "
                              "embedding rows llama.cpp checks the vocabulary against)",
                              file.string(), by_id.rbegin()->first, by_id.rbegin()->second.first,
                              n));
    n = by_id.rbegin()->first + 1;
  }
  std::vector<std::string> tokens(n);
  std::vector<int32_t> types(n);
  for (int64_t i = 0; i < n; ++i) {
    auto it = by_id.find(i);
    if (it == by_id.end()) {
      tokens[i] = fmt::format("[PAD{}]", i);  // as convert_hf_to_gguf pads to vocab_size
      types[i] = kUnused;
      continue;
    }
    tokens[i] = it->second.first;
    types[i] = !unk.empty() && tokens[i] == unk ? kUnknown : it->second.second;
    id_of.emplace(tokens[i], i);
  }

  // Merges as "left right" (tokenizer.json writes either strings or pairs).
  std::vector<std::string> merges;
  for (const auto& mg : model.value("merges", json::array())) {
    if (mg.is_string()) merges.push_back(mg.get<std::string>());
    else if (mg.is_array() && mg.size() == 2)
      merges.push_back(mg[0].get<std::string>() + " " + mg[1].get<std::string>());
    else throw Error(fmt::format("{}: a merge is neither \"a b\" nor [a, b]", file.string()));
  }

  if (spm) {
    // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined piece scores
    // highest; BPE merges by rank. Score of a piece = -(rank of the first merge making it).
    std::vector<float> scores(n, 0.0f);
    std::vector<bool> set(n, false);
    for (size_t r = 0; r < merges.size(); ++r) {
      const auto sp = merges[r].find(' ');
      const std::string joined = merges[r].substr(0, sp) + merges[r].substr(sp + 1);
      auto it = id_of.find(joined);
      if (it == id_of.end())
        throw Error(fmt::format("{}: merge '{}' makes '{}', which is not in the vocabulary",
                                file.string(), merges[r], joined));
      if (!set[it->second]) scores[it->second] = -static_cast<float>(r), set[it->second] = true;
    }
    // Pieces no merge makes (single characters, bytes, specials) never win a merge.
    for (int64_t i = 0; i < n; ++i)
      if (!set[i]) scores[i] = -1e9f;
    m.add_string("tokenizer.ggml.model", "llama");
    m.add_string("tokenizer.ggml.pre", "default");
    m.add_strings("tokenizer.ggml.tokens", tokens);
    m.add_f32s("tokenizer.ggml.scores", scores);
    m.add_i32s("tokenizer.ggml.token_type", types);
    // SentencePiece's dummy prefix: a Prepend("▁") normalizer or a Metaspace prepend scheme.
    const std::string dump = tok.value("normalizer", json()).dump() +
                             tok.value("pre_tokenizer", json()).dump();
    const bool prefix = dump.find("\"Prepend\"") != std::string::npos ||
                        dump.find("\"prepend_scheme\":\"always\"") != std::string::npos ||
                        dump.find("\"prepend_scheme\":\"first\"") != std::string::npos;
    m.add_bool("tokenizer.ggml.add_space_prefix", prefix);
  } else {
    m.add_string("tokenizer.ggml.model", "gpt2");
    m.add_string("tokenizer.ggml.pre", bpe_pre(tok, file));
    m.add_strings("tokenizer.ggml.tokens", tokens);
    m.add_i32s("tokenizer.ggml.token_type", types);
    m.add_strings("tokenizer.ggml.merges", merges);
  }

  // Special tokens: tokenizer_config.json names them; config.json ids as a fall-back.
  auto special = [&](const char* field, const char* key, const char* config_key) {
    if (tcfg.contains(field)) {
      if (auto text = token_text(tcfg[field])) {
        auto it = id_of.find(*text);
        if (it == id_of.end())
          throw Error(fmt::format("{}: {} '{}' is not in the vocabulary of {}",
                                  (dir / "tokenizer_config.json").string(), field, *text,
                                  file.string()));
        m.add_u32(key, static_cast<uint32_t>(it->second));
        return;
      }
    }
    if (config_key && config.raw.contains(config_key) && config.raw[config_key].is_number_integer())
      m.add_u32(key, config.raw[config_key].get<uint32_t>());
  };
  special("bos_token", "tokenizer.ggml.bos_token_id", "bos_token_id");
  special("eos_token", "tokenizer.ggml.eos_token_id", "eos_token_id");
  special("unk_token", "tokenizer.ggml.unknown_token_id", nullptr);
  special("pad_token", "tokenizer.ggml.padding_token_id", "pad_token_id");
  for (const char* f : {"add_bos_token", "add_eos_token"})
    if (tcfg.contains(f) && tcfg[f].is_boolean())
      m.add_bool(std::string("tokenizer.ggml.") + f, tcfg[f].get<bool>());

  // Chat template: tokenizer_config.json's (a string, or named templates), else chat_template.jinja.
  if (tcfg.contains("chat_template")) {
    const json& ct = tcfg["chat_template"];
    if (ct.is_string()) {
      m.add_string("tokenizer.chat_template", ct.get<std::string>());
    } else if (ct.is_array()) {
      for (const auto& t : ct) {
        const std::string name = t.value("name", "");
        const std::string tmpl = t.value("template", "");
        m.add_string(name == "default" ? "tokenizer.chat_template"
                                       : "tokenizer.chat_template." + name,
                     tmpl);
      }
    }
  } else if (std::ifstream f(dir / "chat_template.jinja"); f) {
    m.add_string("tokenizer.chat_template",
                 std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()));
  }
}

}  // namespace fp4kit
