#pragma once
// The one exception type of fp4kit. Its message names the file, tensor and rule involved;
// the command-line tool prints it and exits with code 1 (usage errors exit 2).
#include <stdexcept>
#include <string>

namespace fp4kit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Wrong usage found after option parsing (a missing operand, options that exclude each other):
// the command-line tool exits with code 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message) {}
};

}  // namespace fp4kit
