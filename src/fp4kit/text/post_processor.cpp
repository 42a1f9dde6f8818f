#include "fp4kit/text/post_processor.hpp"

#include "fp4kit/error.hpp"
#include "fp4kit/text/tokenizer_json.hpp"

namespace fp4kit::text {

namespace {

void add(const nlohmann::json& j, const std::string& file, SpecialTokenFrame& frame) {
  const std::string type = json_type_of(j, file, "post_processor");
  if (type == "Sequence") {
    for (const auto& sub : json_array_at(j, "processors", file, "post_processor Sequence")) add(sub, file, frame);
  } else if (type == "ByteLevel") {
    // Only adjusts offsets; ids are unchanged.
  } else if (type == "TemplateProcessing") {
    const auto& single = json_array_at(j, "single", file, "post_processor TemplateProcessing");
    const auto& specials = j.contains("special_tokens") ? j["special_tokens"] : nlohmann::json::object();
    bool seen_sequence = false;
    SpecialTokenFrame local;
    for (const auto& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = json_string_at(item["SpecialToken"], "id", file, "post_processor SpecialToken");
        if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
          throw Error(file + ": post_processor TemplateProcessing uses special token '" + name +
                      "' without ids in special_tokens");
        auto& target = seen_sequence ? local.suffix : local.prefix;
        for (const auto& id : specials[name]["ids"]) target.push_back(id.get<int32_t>());
      } else {
        throw Error(file + ": post_processor TemplateProcessing has an item that is neither Sequence nor SpecialToken");
      }
    }
    // Processors in a Sequence wrap what the previous ones produced.
    frame.prefix.insert(frame.prefix.begin(), local.prefix.begin(), local.prefix.end());
    frame.suffix.insert(frame.suffix.end(), local.suffix.begin(), local.suffix.end());
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    const auto id_of = [&](const char* key) {
      if (!j.contains(key) || !j[key].is_array() || j[key].size() != 2 || !j[key][1].is_number_integer())
        throw Error(file + ": post_processor " + type + " needs '" + key + "' as [token, id]");
      return j[key][1].get<int32_t>();
    };
    frame.prefix.insert(frame.prefix.begin(), id_of("cls"));
    frame.suffix.push_back(id_of("sep"));
  } else {
    throw Error(file + ": post_processor type '" + type +
                "' is not supported (supported: TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, "
                "Sequence)");
  }
}

}  // namespace

SpecialTokenFrame parse_post_processor(const nlohmann::json& j, const std::string& file) {
  SpecialTokenFrame frame;
  if (!j.is_null()) add(j, file, frame);
  return frame;
}

}  // namespace fp4kit::text
