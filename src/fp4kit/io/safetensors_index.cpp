#include "fp4kit/io/safetensors_index.hpp"

#include <fmt/core.h>

#include "fp4kit/error.hpp"
#include "fp4kit/io/json_strict.hpp"

namespace fp4kit {

SafetensorsIndex parse_safetensors_index(std::string_view text,
                                         const std::set<std::string>& available_shards,
                                         std::string_view label) {
  // Duplicate keys are an error: a tensor listed twice in weight_map (say in two shards) would
  // otherwise silently keep only its last shard.
  const nlohmann::json doc = parse_json_strict(text, label);
  if (!doc.is_object()) throw Error(fmt::format("{}: index is not a JSON object", label));
  SafetensorsIndex index;
  if (auto md = doc.find("metadata"); md != doc.end() && !md->is_null()) {
    if (!md->is_object()) throw Error(fmt::format("{}: \"metadata\" is not an object", label));
    index.metadata = *md;
  }
  auto wm = doc.find("weight_map");
  if (wm == doc.end() || !wm->is_object())
    throw Error(fmt::format("{}: missing or non-object \"weight_map\"", label));
  if (wm->empty()) throw Error(fmt::format("{}: \"weight_map\" lists no tensors", label));
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string())
      throw Error(fmt::format("{}: tensor \"{}\": shard name is not a string", label, tensor));
    const auto& name = shard.get_ref<const std::string&>();
    if (!available_shards.count(name))
      throw Error(fmt::format("{}: tensor \"{}\": shard \"{}\" does not exist", label, tensor,
                              name));
    index.weight_map.emplace(tensor, name);
  }
  return index;
}

}  // namespace fp4kit
