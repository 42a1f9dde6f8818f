#pragma once
// JSON written by fp4kit (reports, plans): never fails on a non-UTF-8 path or name (invalid
// bytes become U+FFFD), and files appear atomically (complete or not at all).
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace fp4kit {

std::string json_text(const nlohmann::json& j, int indent = 2);
// json_text(j) + "\n" written with write_file_atomic. Throws fp4kit::Error naming the file.
void write_json_file(const std::filesystem::path& path, const nlohmann::json& j);

}  // namespace fp4kit
