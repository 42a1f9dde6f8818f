#include "fp4kit/text/decoder.hpp"

#include "fp4kit/error.hpp"
#include "fp4kit/text/byte_level.hpp"
#include "fp4kit/text/normalizer.hpp"
#include "fp4kit/text/regex.hpp"
#include "fp4kit/text/tokenizer_json.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

Decoder::Decoder() = default;
Decoder::~Decoder() = default;
Decoder::Decoder(Decoder&&) noexcept = default;
Decoder& Decoder::operator=(Decoder&&) noexcept = default;

Decoder Decoder::parse(const nlohmann::json& j, const std::string& file) {
  Decoder d;
  if (!j.is_null()) {
    d.add(j, file);
    d.present_ = true;
  }
  return d;
}

void Decoder::add(const nlohmann::json& j, const std::string& file) {
  const std::string type = json_type_of(j, file, "decoder");
  if (type == "Sequence") {
    for (const auto& sub : json_array_at(j, "decoders", file, "decoder Sequence")) add(sub, file);
  } else if (type == "ByteLevel") {
    steps_.push_back({Kind::ByteLevel});
  } else if (type == "Replace") {
    const SplitPattern p = parse_split_pattern(j, file, "decoder Replace");
    Step s{p.is_regex ? Kind::ReplaceRegex : Kind::ReplaceString, p.text,
           json_string_at(j, "content", file, "decoder Replace")};
    if (p.is_regex) s.regex = std::make_shared<Regex>(p.text, file + ": decoder Replace");
    else if (p.text.empty()) throw Error(file + ": decoder Replace has an empty pattern");
    steps_.push_back(std::move(s));
  } else if (type == "ByteFallback") {
    steps_.push_back({Kind::ByteFallback});
  } else if (type == "Fuse") {
    steps_.push_back({Kind::Fuse});
  } else if (type == "Strip") {
    Step s{Kind::Strip, json_string_at(j, "content", file, "decoder Strip")};
    s.start = j.value("start", size_t{0});
    s.stop = j.value("stop", size_t{0});
    steps_.push_back(std::move(s));
  } else if (type == "Metaspace") {
    Step s{Kind::Metaspace, j.contains("replacement") ? json_string_at(j, "replacement", file, "decoder Metaspace")
                                                      : std::string("\u2581")};
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string())
      s.prepend = j["prepend_scheme"].get<std::string>() != "never";
    else
      s.prepend = j.value("add_prefix_space", true);
    steps_.push_back(std::move(s));
  } else {
    throw Error(file + ": decoder type '" + type +
                "' is not supported (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)");
  }
}

namespace {

std::vector<std::string> byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string pending;
  size_t pending_count = 0;
  const auto flush = [&] {
    if (pending_count == 0) return;
    if (find_invalid_utf8(pending) == std::string::npos) {
      out.push_back(pending);
    } else {
      for (size_t i = 0; i < pending_count; ++i) out.emplace_back("\xEF\xBF\xBD");
    }
    pending.clear();
    pending_count = 0;
  };
  for (std::string& t : tokens) {
    int byte = -1;
    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
      const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
      };
      const int hi = hex(t[3]), lo = hex(t[4]);
      if (hi >= 0 && lo >= 0) byte = hi * 16 + lo;
    }
    if (byte >= 0) {
      pending.push_back(static_cast<char>(byte));
      ++pending_count;
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  return out;
}

// Removes up to `n` leading (or trailing) copies of the code point `c` from `t`.
void strip_chars(std::string& t, const std::string& c, size_t start, size_t stop) {
  for (size_t i = 0; i < start && t.compare(0, c.size(), c) == 0; ++i) t.erase(0, c.size());
  for (size_t i = 0; i < stop && t.size() >= c.size() && t.compare(t.size() - c.size(), c.size(), c) == 0; ++i)
    t.erase(t.size() - c.size());
}

}  // namespace

std::string Decoder::decode(std::vector<std::string> tokens) const {
  if (!present_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::ByteLevel: {
        std::string bytes;
        for (const std::string& t : tokens) {
          std::string mapped;
          bool all = true;
          for (size_t pos = 0; pos < t.size() && all;) {
            const int b = byte_level_char_to_byte(next_code_point(t, pos));
            if (b < 0) all = false;
            else mapped.push_back(static_cast<char>(b));
          }
          bytes += all ? mapped : t;
        }
        tokens = {utf8_lossy(bytes)};
        break;
      }
      case Kind::ReplaceString:
        for (std::string& t : tokens) t = replace_all(t, step.a, step.b);
        break;
      case Kind::ReplaceRegex:
        for (std::string& t : tokens) {
          std::string out;
          size_t prev = 0;
          for (const auto& [b, e] : step.regex->find_all(t)) {
            out.append(t, prev, b - prev);
            out += step.b;
            prev = e;
          }
          out.append(t, prev, std::string::npos);
          t = std::move(out);
        }
        break;
      case Kind::ByteFallback: tokens = byte_fallback(std::move(tokens)); break;
      case Kind::Fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {std::move(all)};
        break;
      }
      case Kind::Strip:
        for (std::string& t : tokens) strip_chars(t, step.a, step.start, step.stop);
        break;
      case Kind::Metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          // HF drops every replacement char of the first token when a prefix was prepended.
          tokens[i] = replace_all(tokens[i], step.a, i == 0 && step.prepend ? "" : " ");
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace fp4kit::text
