#pragma once
// Assertions over verify reports.
#include <gtest/gtest.h>

#include <string>

#include "fp4kit/verify/verify.hpp"
#include "support/temp_dir.hpp"
#include "verify/nvfp4_fixture.hpp"

namespace fp4kit::testing {

inline verify::VerifyReport verify_mem(const MemCheckpoint& m, const verify::VerifyOptions& o = {}) {
  TempDir dir;
  m.write(dir.path());
  return verify::verify_checkpoint(dir.path(), o);
}

// Is there a finding of this severity and check whose module contains `module_part`?
inline bool has_finding(const verify::VerifyReport& r, verify::Finding::Severity s,
                        const std::string& check, const std::string& module_part = "") {
  for (const auto& f : r.findings)
    if (f.severity == s && f.check == check && f.module.find(module_part) != std::string::npos)
      return true;
  return false;
}

inline std::string dump_findings(const verify::VerifyReport& r) {
  std::string s;
  for (const auto& f : r.findings)
    s += std::string(verify::severity_name(f.severity)) + " " + f.check + " [" + f.module + "] " +
         f.message + "\n";
  return s;
}

#define EXPECT_FINDING(report, sev, check, module)                                            \
  EXPECT_TRUE(::fp4kit::testing::has_finding(report, ::fp4kit::verify::Finding::sev, check,   \
                                             module))                                         \
      << "expected " #sev " " << check << " on '" << module << "'; got:\n"                    \
      << ::fp4kit::testing::dump_findings(report)

}  // namespace fp4kit::testing
