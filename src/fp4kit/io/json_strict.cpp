#include "fp4kit/io/json_strict.hpp"

#include <fmt/core.h>

#include <set>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"

namespace fp4kit {

nlohmann::json parse_json_strict(std::string_view text, std::string_view label) {
  using nlohmann::json;
  // One set of seen keys per open object. The callback sees every key before its value, so a
  // second occurrence is caught even though the DOM would silently overwrite the first.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) {
          // Abort the parse: an exception is the only way out of nlohmann's callback.
          throw Error(fmt::format("{}: JSON nested deeper than {} levels", label, kMaxJsonDepth));
        }
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && duplicate.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second)
          duplicate = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;
  };
  json result;
  try {
    result = json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                         /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: invalid JSON: {}", label, e.what()));
  }
  if (!duplicate.empty())
    throw Error(fmt::format("{}: duplicate name \"{}\" (each name may appear only once)", label,
                            duplicate));
  return result;
}

}  // namespace fp4kit
