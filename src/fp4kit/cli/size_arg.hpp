#pragma once
// Parses sizes like "5GB", "500MB", "1.5G", "123456" (bytes) for command-line options.
#include <cstdint>
#include <string>

namespace fp4kit::cli {

// Throws fp4kit::Error naming the option for anything unparsable or zero.
uint64_t parse_size_arg(const std::string& text, const std::string& option);

}  // namespace fp4kit::cli
