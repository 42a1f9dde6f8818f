#pragma once
// The "decoder" of a tokenizer.json: turns token strings back into text (ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace and Sequence, each a list -> list step as in HF).
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4kit::text {

class Regex;

class Decoder {
 public:
  static Decoder parse(const nlohmann::json& j, const std::string& file);

  Decoder();
  ~Decoder();
  Decoder(Decoder&&) noexcept;
  Decoder& operator=(Decoder&&) noexcept;

  std::string decode(std::vector<std::string> tokens) const;

 private:
  enum class Kind { ByteLevel, ReplaceString, ReplaceRegex, ByteFallback, Fuse, Strip, Metaspace };
  struct Step {
    Kind kind;
    std::string a{}, b{};  // Replace pattern/content; Strip content; Metaspace replacement
    size_t start = 0, stop = 0;
    bool prepend = true;  // Metaspace: prepend_scheme != never
    std::shared_ptr<Regex> regex{};
  };
  void add(const nlohmann::json& j, const std::string& file);
  std::vector<Step> steps_;
  bool present_ = false;
};

}  // namespace fp4kit::text
