#pragma once
// Exclusion lists as the loaders match them against checkpoint module names.
//   ModelOpt (exclude_modules / ignore): exact name, fnmatch wildcards ('*' crosses dots), or a
//   parent module ("lm_head" excludes "lm_head.*"). vLLM additionally applies a raw substring test
//   against its own fused names; `substring_only` reports where only that would match.
//   compressed-tensors (ignore): exact name, or "re:<regex>" matched at the start (Python
//   re.match).
#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

namespace fp4kit::verify {

enum class ExclusionStyle { ModelOpt, CompressedTensors };

class ExclusionList {
 public:
  ExclusionList() = default;
  ExclusionList(std::vector<std::string> patterns, ExclusionStyle style);

  const std::vector<std::string>& patterns() const { return patterns_; }
  // Index of the first pattern that excludes `module`, or -1.
  int match(std::string_view module) const;
  // ModelOpt only: a pattern without wildcards that is a substring of `module` but does not match
  // it otherwise (vLLM's legacy substring rule would still exclude the module); -1 when none.
  int substring_only(std::string_view module) const;
  // Does pattern i match `module`?
  bool pattern_matches(size_t i, std::string_view module) const;

 private:
  std::vector<std::string> patterns_;
  ExclusionStyle style_ = ExclusionStyle::ModelOpt;
  // Compiled "re:" patterns (compressed-tensors), null for the others or an invalid regex.
  std::vector<std::shared_ptr<const std::regex>> regexes_;
};

// fnmatch(3) without flags: '*' and '?' match any characters including '.', '[...]' classes.
bool fnmatch_name(std::string_view pattern, std::string_view name);

}  // namespace fp4kit::verify
