#pragma once
// fnmatch-style globs over module names, as exclude lists and ModelOpt's quant_cfg use them:
// `*` matches any run of characters INCLUDING dots, `?` one character, `[...]` a class.
#include <string>

namespace fp4kit {

bool glob_match(const std::string& pattern, const std::string& name);

}  // namespace fp4kit
