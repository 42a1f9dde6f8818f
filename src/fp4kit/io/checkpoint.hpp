#pragma once
// A Hugging Face checkpoint directory: one model.safetensors or shards through
// model.safetensors.index.json, config.json (kept as JSON), and the sidecar files to copy.
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/io/safetensors_reader.hpp"

namespace fp4kit {

class Checkpoint {
 public:
  // Opens and validates a directory (or a single .safetensors file). Throws fp4kit::Error.
  static std::unique_ptr<Checkpoint> open(const std::filesystem::path& path);

  const std::filesystem::path& dir() const { return dir_; }
  // config.json, or an empty object when absent.
  const nlohmann::json& config() const { return config_; }
  bool has_config() const { return has_config_; }
  // generation_config.json, or an empty object.
  const nlohmann::json& generation_config() const { return generation_config_; }

  // All tensor names, sorted.
  const std::vector<std::string>& tensor_names() const { return names_; }
  bool has(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const;  // throws naming the tensor
  const SafetensorsFile& file_of(std::string_view name) const;
  std::span<const uint8_t> bytes(std::string_view name) const;
  void release(std::string_view name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }
  uint64_t total_bytes() const;

  // Files other than weights, index and config.json that an output must carry along
  // (tokenizer*, chat templates, generation_config.json, processor configs, custom *.py, ...),
  // relative to dir().
  const std::vector<std::filesystem::path>& sidecar_files() const { return sidecars_; }

  // Things found while opening that do not stop the work but the user must hear about: a
  // *.safetensors file the index does not reference, an index total_size that disagrees with
  // the shards, a symbolic link leading outside the checkpoint (not carried along).
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  std::filesystem::path dir_;
  nlohmann::json config_ = nlohmann::json::object();
  nlohmann::json generation_config_ = nlohmann::json::object();
  bool has_config_ = false;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>, std::less<>> index_;
  std::vector<std::string> names_;
  std::vector<std::filesystem::path> sidecars_;
  std::vector<std::string> warnings_;
};

}  // namespace fp4kit
