#pragma once
// model.safetensors.index.json: which shard holds which tensor. Parsing is pure (text + the shard
// file names that exist) so that the fuzzer can drive it without files.
#include <map>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace fp4kit {

struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;   // tensor name -> shard file name
  nlohmann::json metadata = nlohmann::json::object();  // the index's "metadata" (total_size, ...)
};

// Validates: JSON object, "weight_map" an object of tensor name -> shard file name, no tensor
// listed twice, every shard named is one of `available_shards` (plain file names, no paths),
// "metadata" an object when present. Throws fp4kit::Error naming `label` and the tensor.
SafetensorsIndex parse_safetensors_index(std::string_view json,
                                         const std::set<std::string>& available_shards,
                                         std::string_view label);

}  // namespace fp4kit
