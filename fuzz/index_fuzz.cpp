// libFuzzer target: model.safetensors.index.json text through the pure index parser, against a
// fixed set of shard files that "exist". Any input must either parse into a weight map that names
// only existing shards, or throw fp4kit::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "fp4kit/error.hpp"
#include "fp4kit/io/safetensors_index.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::set<std::string> kShards = {"model-00001-of-00002.safetensors",
                                                "model-00002-of-00002.safetensors",
                                                "model.safetensors"};
  try {
    auto index = fp4kit::parse_safetensors_index(
        std::string_view(reinterpret_cast<const char*>(data), size), kShards,
        "model.safetensors.index.json");
    if (index.weight_map.empty()) std::abort();
    for (const auto& [tensor, shard] : index.weight_map)
      if (!kShards.count(shard)) std::abort();
    if (!index.metadata.is_object()) std::abort();
  } catch (const fp4kit::Error&) {
  }
  return 0;
}
