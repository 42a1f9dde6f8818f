// The demo's work directory (cli/scratch_dir.hpp) and child runner (cli/subprocess.hpp).
#include <gtest/gtest.h>

#include <fstream>

#include "fp4kit/cli/scratch_dir.hpp"
#include "fp4kit/cli/subprocess.hpp"
#include "support/error_of.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

namespace fs = std::filesystem;

void touch(const fs::path& p) { std::ofstream(p) << "x"; }

TEST(ScratchDir, RemovesWhatItCreatedUnlessKept) {
  testing::TempDir tmp;
  {
    cli::ScratchDir d((tmp / "new" / "deep").string(), "unused");
    touch(d.path() / "a");
  }
  EXPECT_FALSE(fs::exists(tmp / "new" / "deep"));
  {
    cli::ScratchDir d((tmp / "kept").string(), "unused");
    touch(d.path() / "a");
    d.keep();
  }
  EXPECT_TRUE(fs::exists(tmp / "kept" / "a"));
}

TEST(ScratchDir, EmptiesButKeepsADirectoryThatExistedAndRefusesANonEmptyOne) {
  testing::TempDir tmp;
  fs::create_directories(tmp / "given");
  {
    cli::ScratchDir d((tmp / "given").string(), "unused");
    fs::create_directories(d.path() / "sub");
    touch(d.path() / "sub" / "b");
  }
  EXPECT_TRUE(fs::is_directory(tmp / "given"));
  EXPECT_TRUE(fs::is_empty(tmp / "given"));
  touch(tmp / "given" / "user-file");
  const auto msg = testing::error_of([&] { cli::ScratchDir d((tmp / "given").string(), "x"); });
  EXPECT_NE(msg.find("exists and is not an empty directory"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(tmp / "given" / "user-file"));
}

TEST(ScratchDir, TemporaryDirectoryUnderTmpdirIsRemoved) {
  testing::TempDir tmp;
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  setenv("TMPDIR", tmp.path().c_str(), 1);
  fs::path made;
  {
    cli::ScratchDir d("", "fp4kit-unit");
    made = d.path();
    touch(made / "f");
    EXPECT_EQ(made.parent_path(), tmp.path());
    EXPECT_EQ(made.filename().string().rfind("fp4kit-unit-", 0), 0u);
  }
  if (old) setenv("TMPDIR", saved.c_str(), 1); else unsetenv("TMPDIR");
  EXPECT_FALSE(fs::exists(made));
}

TEST(RunChild, CapturesBothStreamsExitCodeAndWorkingDirectory) {
  testing::TempDir tmp;
  touch(tmp / "marker");
  const auto r = cli::run_child("/bin/sh", {"-c", "ls; echo to-stderr >&2; exit 3"}, tmp.path());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.output.find("marker"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("to-stderr"), std::string::npos) << r.output;
  const auto k = cli::run_child("/bin/sh", {"-c", "kill -TERM $$"}, tmp.path());
  EXPECT_EQ(k.exit_code, 128 + 15);
  EXPECT_NE(testing::error_of([&] { cli::run_child("/nonexistent/prog", {}, tmp.path()); })
                .find("cannot start /nonexistent/prog"),
            std::string::npos);
}

}  // namespace
}  // namespace fp4kit
