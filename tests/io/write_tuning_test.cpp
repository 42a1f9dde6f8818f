// The environment switches of the write path: defaults, overrides, and malformed values refused
// naming the variable (a typo must not silently measure the default).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "fp4kit/io/write_tuning.hpp"
#include "support/error_of.hpp"

namespace fp4kit {
namespace {

using ::testing::HasSubstr;
using testing::error_of;

WriteTuning parse(const std::map<std::string, std::string>& vars) {
  return parse_write_tuning([&](const char* n) -> const char* {
    auto it = vars.find(n);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(WriteTuning, DefaultsAndOverrides) {
  const WriteTuning d = parse({});
  EXPECT_EQ(d.writers, 4u);
  EXPECT_EQ(d.kept_piece_bytes, 64ull << 20);
  EXPECT_EQ(d.writeback_window, 32ull << 20);
  EXPECT_EQ(d.dirty_lag, 0u);
  const WriteTuning t = parse({{"FP4KIT_WRITERS", "8"},
                               {"FP4KIT_KEPT_PIECE_MIB", "0"},
                               {"FP4KIT_WB_WINDOW_MIB", "128"},
                               {"FP4KIT_WB_LAG_MIB", "256"}});
  EXPECT_EQ(t.writers, 8u);
  EXPECT_EQ(t.kept_piece_bytes, 0u);
  EXPECT_EQ(t.writeback_window, 128ull << 20);
  EXPECT_EQ(t.dirty_lag, 256ull << 20);
}

TEST(WriteTuning, MalformedValuesAreErrorsNamingTheVariable) {
  EXPECT_THAT(error_of([] { parse({{"FP4KIT_WRITERS", "0"}}); }),
              HasSubstr("FP4KIT_WRITERS='0': expected a whole number from 1 to 64"));
  EXPECT_THAT(error_of([] { parse({{"FP4KIT_KEPT_PIECE_MIB", "64M"}}); }),
              HasSubstr("FP4KIT_KEPT_PIECE_MIB='64M'"));
  EXPECT_THAT(error_of([] { parse({{"FP4KIT_WB_WINDOW_MIB", "-1"}}); }),
              HasSubstr("FP4KIT_WB_WINDOW_MIB='-1'"));
  EXPECT_THAT(error_of([] { parse({{"FP4KIT_WB_LAG_MIB", " 5"}}); }),
              HasSubstr("FP4KIT_WB_LAG_MIB=' 5'"));
  EXPECT_THAT(error_of([] { parse({{"FP4KIT_WRITERS", "99999999999999999999999"}}); }),
              HasSubstr("FP4KIT_WRITERS="));
}

}  // namespace
}  // namespace fp4kit
