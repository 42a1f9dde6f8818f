#include "fp4kit/plan/glob.hpp"

#include <fnmatch.h>

namespace fp4kit {

// No FNM_PATHNAME / FNM_PERIOD: module names are not paths, and "*" must cross dots
// ("model.layers.*.mlp.gate" matches every layer), as in Python's fnmatch.
bool glob_match(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

}  // namespace fp4kit
