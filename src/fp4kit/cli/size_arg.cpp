#include "fp4kit/cli/size_arg.hpp"

#include <fmt/core.h>

#include <cctype>
#include <cmath>
#include <cstdint>
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
  // A wrong value is wrong usage (exit 2), like any other bad option value.
  if (end == text.c_str() || mult == 0 || std::isnan(bytes) || (std::isfinite(value) && bytes < 1))
    throw UsageError(fmt::format("{}: cannot read '{}' as a size (e.g. 5GB, 500MB, 1048576)",
                                 option, text));
  // 2^64 and beyond does not fit the byte count (a cast would be undefined, in practice 0).
  constexpr double kLimit = 18446744073709551616.0;  // 2^64
  if (!(bytes < kLimit))
    throw UsageError(fmt::format("{}: '{}' is too large (at most {} bytes, about 18 EB)", option,
                                 text, UINT64_MAX));
  return static_cast<uint64_t>(bytes);
}

}  // namespace fp4kit::cli
