#include "fp4kit/cli/size_arg.hpp"

#include <fmt/core.h>

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "fp4kit/error.hpp"

namespace fp4kit::cli {

uint64_t parse_size_arg(const std::string& text, const std::string& option) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  std::string unit(end ? end : "");
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 0;
  // Decimal units as Hugging Face's max_shard_size uses them; KiB/MiB/GiB binary.
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KB" || unit == "K") mult = 1e3;
  else if (unit == "MB" || unit == "M") mult = 1e6;
  else if (unit == "GB" || unit == "G") mult = 1e9;
  else if (unit == "TB" || unit == "T") mult = 1e12;
  else if (unit == "KIB") mult = 1024.0;
  else if (unit == "MIB") mult = 1024.0 * 1024;
  else if (unit == "GIB") mult = 1024.0 * 1024 * 1024;
  const double bytes = value * mult;
  if (end == text.c_str() || mult == 0 || !(bytes >= 1) || !std::isfinite(bytes))
    throw Error(fmt::format("{}: cannot read '{}' as a size (e.g. 5GB, 500MB, 1048576)", option,
                            text));
  return static_cast<uint64_t>(bytes);
}

}  // namespace fp4kit::cli
