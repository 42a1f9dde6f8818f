#pragma once
// Collects findings while the checks run (internal to verify).
#include <string>
#include <utility>
#include <vector>

#include "fp4kit/verify/verify.hpp"

namespace fp4kit::verify {

class Findings {
 public:
  void error(std::string check, std::string module, std::string message) {
    add(Finding::Error, std::move(check), std::move(module), std::move(message));
  }
  void warning(std::string check, std::string module, std::string message) {
    add(Finding::Warning, std::move(check), std::move(module), std::move(message));
  }
  void info(std::string check, std::string module, std::string message) {
    add(Finding::Info, std::move(check), std::move(module), std::move(message));
  }
  void add(Finding::Severity s, std::string check, std::string module, std::string message) {
    list.push_back({s, std::move(check), std::move(module), std::move(message)});
  }
  std::vector<Finding> list;
};

}  // namespace fp4kit::verify
