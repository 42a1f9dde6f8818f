#pragma once
// Locating ../shared/data for tests. Tests that need it FAIL under CI (CI=true) when it is
// missing and SKIP with a visible message elsewhere.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace fp4kit::testing {

inline std::filesystem::path shared_data_dir() {
  if (const char* env = std::getenv("FP4KIT_SHARED_DATA")) return env;
  return FP4KIT_SHARED_DATA;
}

inline bool running_in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

}  // namespace fp4kit::testing

// Use at the top of a test: yields the path of `rel` inside shared/data, or fails/skips.
#define FP4KIT_REQUIRE_SHARED(var, rel)                                                   \
  const std::filesystem::path var = ::fp4kit::testing::shared_data_dir() / (rel);         \
  if (!std::filesystem::exists(var)) {                                                    \
    if (::fp4kit::testing::running_in_ci()) {                                             \
      FAIL() << "shared data missing under CI: " << var;                                  \
    } else {                                                                              \
      GTEST_SKIP() << "SKIPPED: shared data not found at " << var                         \
                   << " (set FP4KIT_SHARED_DATA)";                                        \
    }                                                                                     \
  }
