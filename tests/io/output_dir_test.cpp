// Atomic output directories: refusals, commit, and what is left after an error, a kill or a full
// disk (never an OUT that looks finished, never a touched source).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cstring>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/output_dir.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "io/raw_safetensors.hpp"
#include "support/temp_dir.hpp"
#include "support/error_of.hpp"

namespace fp4kit {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::read_file;
using testing::TempDir;
using testing::write_file;

using testing::error_of;

fs::path partial_of(const fs::path& out) {
  fs::path p = out;
  p += ".partial";
  return p;
}

TEST(OutputDir, WritesIntoPartialThenCommits) {
  TempDir t;
  const fs::path out = t / "out";
  {
    OutputDir od(out, t / "src", false);
    EXPECT_EQ(od.partial(), partial_of(out));
    EXPECT_TRUE(fs::is_directory(od.partial()));
    EXPECT_FALSE(fs::exists(out));
    write_file(od.partial() / "a.txt", "hello");
    write_file(od.partial() / "sub/b.txt", "b");
    od.commit();
    EXPECT_EQ(od.final_path(), out);
  }
  EXPECT_EQ(read_file(out / "a.txt"), "hello");
  EXPECT_EQ(read_file(out / "sub/b.txt"), "b");
  EXPECT_FALSE(fs::exists(partial_of(out)));
}

TEST(OutputDir, DestroyedWithoutCommitLeavesNothing) {
  TempDir t;
  const fs::path out = t / "out";
  {
    OutputDir od(out, {}, false);
    write_file(od.partial() / "model.safetensors", "half");
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(partial_of(out)));
}

TEST(OutputDir, RefusesSourceAndInsideSource) {
  TempDir t;
  fs::create_directories(t / "src/sub");
  EXPECT_THAT(error_of([&] { OutputDir od(t / "src", t / "src", true); }),
              HasSubstr("refusing to write into the source"));
  EXPECT_THAT(error_of([&] { OutputDir od(t / "src/", t / "src", true); }),
              HasSubstr("refusing to write into the source"));
  EXPECT_THAT(error_of([&] { OutputDir od(t / "src/sub/out", t / "src", true); }),
              HasSubstr("refusing to write into the source"));
  EXPECT_THAT(error_of([&] { OutputDir od(t / "src/../src/x", t / "src", true); }),
              HasSubstr("refusing to write into the source"));
  // a symlink to the source is the source
  fs::create_directory_symlink(t / "src", t / "link");
  EXPECT_THAT(error_of([&] { OutputDir od(t / "link", t / "src", true); }),
              HasSubstr("refusing to write into the source"));
  // --force over a parent of the source would delete it
  EXPECT_THAT(error_of([&] { OutputDir od(t.path(), t / "src", true); }),
              HasSubstr("contains the source"));
  // a sibling whose name starts like the source is fine
  OutputDir ok(t / "src2", t / "src", false);
}

TEST(OutputDir, NonEmptyOutNeedsForceAndForceReplaces) {
  TempDir t;
  const fs::path out = t / "out";
  write_file(out / "old.txt", "old");
  EXPECT_THAT(error_of([&] { OutputDir od(out, {}, false); }),
              AllOf(HasSubstr("out"), HasSubstr("not empty"), HasSubstr("--force")));
  EXPECT_EQ(read_file(out / "old.txt"), "old");
  {
    OutputDir od(out, {}, true);
    write_file(od.partial() / "new.txt", "new");
    EXPECT_EQ(read_file(out / "old.txt"), "old");  // untouched until commit
    od.commit();
  }
  EXPECT_FALSE(fs::exists(out / "old.txt"));
  EXPECT_EQ(read_file(out / "new.txt"), "new");
  EXPECT_FALSE(fs::exists(partial_of(out)));
}

TEST(OutputDir, EmptyExistingOutIsFineAndAFileIsNot) {
  TempDir t;
  fs::create_directories(t / "empty");
  {
    OutputDir od(t / "empty", {}, false);
    write_file(od.partial() / "x", "x");
    od.commit();
  }
  EXPECT_EQ(read_file(t / "empty/x"), "x");
  write_file(t / "file", "f");
  EXPECT_THAT(error_of([&] { OutputDir od(t / "file", {}, true); }),
              HasSubstr("not a directory"));
}

TEST(OutputDir, LeftoverPartialFromAKilledRunIsReplaced) {
  TempDir t;
  write_file(partial_of(t / "out") / "stale.safetensors", "stale");
  write_file(partial_of(t / "out") / kPartialMarker, "");  // ours: it carries fp4kit's marker
  OutputDir od(t / "out", {}, false);
  EXPECT_FALSE(fs::exists(od.partial() / "stale.safetensors"));
}

TEST(OutputDir, PartialWithoutTheMarkerIsNeverDeleted) {
  TempDir t;
  write_file(partial_of(t / "out") / "mine.txt", "not fp4kit's");
  EXPECT_THROW(OutputDir(t / "out", {}, false), Error);
  EXPECT_TRUE(fs::exists(partial_of(t / "out") / "mine.txt"));
}

// A child process that writes part of a checkpoint and is killed: no OUT appears.
TEST(OutputDir, KillMidWriteLeavesNoOut) {
  TempDir t;
  const fs::path out = t / "out";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    OutputDir od(out, {}, false);
    CheckpointWriter w(od.partial(), {{"a", DType::U8, {4}}, {"b", DType::U8, {4}}}, 4);
    const uint8_t data[4] = {1, 2, 3, 4};
    w.write("a", data);
    raise(SIGKILL);
    _exit(3);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::exists(partial_of(out)));  // clearly unfinished, replaced by the next run
  {
    OutputDir od(out, {}, false);
    CheckpointWriter w(od.partial(), {{"a", DType::U8, {4}}}, 4);
    const uint8_t data[4] = {5, 6, 7, 8};
    w.write("a", data);
    w.finish();
    od.commit();
  }
  auto ck = Checkpoint::open(out);
  EXPECT_EQ(ck->bytes("a")[0], 5);
}

// Writes a 256 KiB checkpoint (two shards) into `out`; returns the error message ("" when it succeeded).
std::string try_write_checkpoint(const fs::path& out) {
  try {
    OutputDir od(out, {}, false);
    std::vector<uint8_t> data(64 << 10, 0x5a);
    std::vector<TensorSpec> specs;
    for (int i = 0; i < 4; ++i) specs.push_back({fmt::format("t{}", i), DType::U8, {data.size()}});
    CheckpointWriter w(od.partial(), specs, 128 << 10);  // two shards of 128 KiB
    for (const auto& s : specs) w.write(s.name, data);
    w.finish();
    od.commit();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A file size limit (as a full disk would) in a child process: write() fails with EFBIG.
TEST(OutputDir, FileSizeLimitGivesClearErrorAndNoOut) {
  TempDir t;
  const fs::path out = t / "out";
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {100 << 10, 100 << 10};
    setrlimit(RLIMIT_FSIZE, &lim);
    const std::string msg = try_write_checkpoint(out);
    (void)!write(fds[1], msg.data(), msg.size());
    _exit(0);
  }
  close(fds[1]);
  std::string msg;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_THAT(msg, AllOf(HasSubstr("model-0000"), HasSubstr("write failed"),
                         HasSubstr(std::strerror(EFBIG))));
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(partial_of(out)));
}

// A real full file system: a 128 KiB tmpfs (needs root; skipped visibly otherwise).
TEST(OutputDir, FullDiskGivesClearErrorAndNoOut) {
  TempDir t;
  const fs::path mnt = t / "mnt";
  fs::create_directories(mnt);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=128k") != 0)
    GTEST_SKIP() << "SKIPPED: cannot mount a small tmpfs (" << std::strerror(errno)
                 << "); the RLIMIT_FSIZE test covers the error path";
  const std::string msg = try_write_checkpoint(mnt / "out");
  EXPECT_THAT(msg, AllOf(HasSubstr("model-0000"), HasSubstr(std::strerror(ENOSPC))));
  EXPECT_FALSE(fs::exists(mnt / "out"));
  EXPECT_FALSE(fs::exists(mnt / "out.partial"));
  umount(mnt.c_str());
}

}  // namespace
}  // namespace fp4kit
