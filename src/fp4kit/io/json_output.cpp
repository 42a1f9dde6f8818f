#include "fp4kit/io/json_output.hpp"

#include "fp4kit/io/file_sync.hpp"

namespace fp4kit {

std::string json_text(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

void write_json_file(const std::filesystem::path& path, const nlohmann::json& j) {
  write_file_atomic(path, json_text(j) + "\n");
}

}  // namespace fp4kit
