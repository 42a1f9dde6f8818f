// engine::EvalWindowReader: eval's perplexity windows read as they are taken, the same windows as
// ppl_windows over the whole stream, with memory that does not follow the file's size.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <fstream>

#include "fp4kit/engine/data_source.hpp"
#include "fp4kit/engine/token_windows.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

std::vector<std::vector<int32_t>> all_windows(engine::EvalWindowReader& r) {
  std::vector<std::vector<int32_t>> out;
  std::vector<int32_t> w;
  while (r.next(w)) out.push_back(w);
  return out;
}

long peak_rss_kib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

TEST(EvalWindows, StreamedWindowsAreThoseOfTheWholeStream) {
  testing::TempDir tmp;
  std::vector<uint16_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<uint16_t>(i * 7919 % 65536);
  const auto path = tmp / "ids.u16";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(ids.data()), 2000);
  const std::vector<int32_t> stream(ids.begin(), ids.end());
  // ctx 64: 15 windows of 65 and a last one of 41; 999: the last window of one token is dropped.
  for (const size_t ctx : {64u, 999u, 1000u, 1u}) {
    for (const size_t max_windows : {0u, 3u}) {
      engine::EvalWindowReader r(path, tmp.path(), {}, ctx, max_windows, 0);
      EXPECT_EQ(all_windows(r), engine::ppl_windows(stream, ctx, max_windows)) << ctx << " " << max_windows;
    }
  }
  // --tokens N: the windows of the first N tokens.
  engine::EvalWindowReader r(path, tmp.path(), {}, 64, 0, 300);
  EXPECT_EQ(all_windows(r), engine::ppl_windows(std::vector<int32_t>(stream.begin(), stream.begin() + 300), 64, 0));
}

TEST(EvalWindows, MemoryDoesNotFollowTheFileSize) {
  testing::TempDir tmp;
  // 400 MB of ids (200 Mi tokens, sparse: cheap to make). Holding them as the stream eval built
  // before took 800 MB, plus as many again in windows.
  const auto path = tmp / "big.u16";
  std::ofstream(path, std::ios::binary) << std::string(4096, '\x01');
  std::filesystem::resize_file(path, 400u << 20);
  const long before = peak_rss_kib();
  engine::EvalWindowReader r(path, tmp.path(), {}, 512, 0, 0);
  std::vector<int32_t> w;
  size_t windows = 0;
  while (windows < 20000 && r.next(w)) ++windows;  // 10 Mi tokens, read and dropped
  EXPECT_EQ(windows, 20000u);
  EXPECT_EQ(w.size(), 513u);
  EXPECT_LT(peak_rss_kib() - before, 32 * 1024) << "peak RSS growth while reading 10 Mi of 200 Mi tokens";
}

}  // namespace
}  // namespace fp4kit
