#include "fp4kit/verify/exclusion.hpp"

#include <fnmatch.h>


namespace fp4kit::verify {
namespace {

bool has_wildcard(std::string_view p) { return p.find_first_of("*?[") != std::string_view::npos; }

// Python's re.match: anchored at the start, not at the end.
bool regex_match_at_start(const std::regex& rx, std::string_view name) {
  std::cmatch m;
  return std::regex_search(name.data(), name.data() + name.size(), m, rx,
                           std::regex_constants::match_continuous);
}

}  // namespace

bool fnmatch_name(std::string_view pattern, std::string_view name) {
  return ::fnmatch(std::string(pattern).c_str(), std::string(name).c_str(), 0) == 0;
}

ExclusionList::ExclusionList(std::vector<std::string> patterns, ExclusionStyle style)
    : patterns_(std::move(patterns)), style_(style) {
  for (const auto& p : patterns_) {
    std::shared_ptr<const std::regex> rx;
    if (style_ == ExclusionStyle::CompressedTensors && p.rfind("re:", 0) == 0) {
      try {
        rx = std::make_shared<const std::regex>(p.substr(3), std::regex::ECMAScript);
      } catch (const std::regex_error&) {
        rx = nullptr;  // an invalid regex matches nothing
      }
    }
    regexes_.push_back(std::move(rx));
  }
}

bool ExclusionList::pattern_matches(size_t i, std::string_view module) const {
  const std::string& p = patterns_[i];
  if (style_ == ExclusionStyle::CompressedTensors) {
    if (p.rfind("re:", 0) == 0) return regexes_[i] && regex_match_at_start(*regexes_[i], module);
    return module == p;
  }
  if (module == p) return true;
  if (module.size() > p.size() && module.substr(0, p.size()) == p && module[p.size()] == '.')
    return true;  // parent module excluded
  return has_wildcard(p) && fnmatch_name(p, module);
}

int ExclusionList::match(std::string_view module) const {
  for (size_t i = 0; i < patterns_.size(); ++i)
    if (pattern_matches(i, module)) return static_cast<int>(i);
  return -1;
}

int ExclusionList::substring_only(std::string_view module) const {
  if (style_ != ExclusionStyle::ModelOpt) return -1;
  for (size_t i = 0; i < patterns_.size(); ++i) {
    const std::string& p = patterns_[i];
    if (has_wildcard(p) || p.empty()) continue;
    if (module.find(p) != std::string_view::npos && !pattern_matches(i, module))
      return static_cast<int>(i);
  }
  return -1;
}

}  // namespace fp4kit::verify
