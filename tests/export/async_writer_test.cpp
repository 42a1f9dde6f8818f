// The asynchronous writer: several threads write the queued tensors at their places; the files
// equal those of the sequential CheckpointWriter, borrowed bytes are released after their write,
// and misuse is reported to the caller.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <atomic>

#include "fp4kit/export/async_writer.hpp"
#include "io/raw_safetensors.hpp"
#include "support/error_of.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using ::testing::HasSubstr;
using testing::error_of;
using testing::read_file;
using testing::TempDir;

std::vector<uint8_t> payload(size_t n, int k) {
  std::vector<uint8_t> s(n);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<uint8_t>((i * 131 + k * 17 + 7) & 0xff);
  return s;
}

TEST(AsyncWriter, SeveralThreadsGiveTheSequentialFiles) {
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 200; ++i)
    specs.push_back({fmt::format("t{}", i), DType::U8, {static_cast<uint64_t>(500 + 61 * i)}});
  std::vector<std::vector<uint8_t>> data;
  for (size_t k = 0; k < specs.size(); ++k) data.push_back(payload(specs[k].nbytes(), static_cast<int>(k)));
  TempDir seq, par;
  {
    CheckpointWriter w(seq.path(), specs, 400'000);
    for (size_t k = 0; k < specs.size(); ++k) w.write(specs[k].name, data[k]);
    w.finish();
  }
  CheckpointWriter w(par.path(), specs, 400'000);
  std::atomic<int> released{0};
  {
    AsyncWriter a(w, /*max_in_flight=*/100'000, /*threads=*/4);
    for (size_t k = 0; k < specs.size(); ++k) {
      if (k % 3 == 0) {
        a.write_borrowed(specs[k].name, data[k], [&] { ++released; });
      } else if (k % 3 == 1) {
        const auto& d = data[k];
        a.write_part(specs[k].name, {d.begin(), d.begin() + 200}, false);
        a.write_part(specs[k].name, {d.begin() + 200, d.end()}, true);
      } else {
        a.write(specs[k].name, data[k]);
      }
    }
    a.drain();
  }
  w.finish();
  EXPECT_EQ(released.load(), 67);
  ASSERT_GT(w.files().size(), 2u);  // several shards + index
  for (const auto& f : w.files())
    EXPECT_EQ(read_file(par / f.filename().string()), read_file(seq / f.filename().string())) << f;
}

// Kept tensors go to the writer in pieces that several threads copy at once: same files as one
// write each, and the release callback runs once per tensor, after the last of its pieces.
TEST(AsyncWriter, BorrowedPiecesGiveTheSequentialFiles) {
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 40; ++i)
    specs.push_back({fmt::format("t{}", i), DType::U8, {static_cast<uint64_t>(3000 + 977 * i)}});
  std::vector<std::vector<uint8_t>> data;
  for (size_t k = 0; k < specs.size(); ++k)
    data.push_back(payload(specs[k].nbytes(), static_cast<int>(k)));
  TempDir seq, par;
  {
    CheckpointWriter w(seq.path(), specs, 100'000);
    for (size_t k = 0; k < specs.size(); ++k) w.write(specs[k].name, data[k]);
    w.finish();
  }
  CheckpointWriter w(par.path(), specs, 100'000);
  std::vector<std::atomic<int>> released(specs.size());
  {
    AsyncWriter a(w, /*max_in_flight=*/20'000, /*threads=*/4);
    for (size_t k = 0; k < specs.size(); ++k) {
      // Pieces that divide the tensor, that do not, one byte, and 0 (whole).
      const uint64_t piece = k % 4 == 0 ? 1000 : k % 4 == 1 ? 777 : k % 4 == 2 ? 1 << 20 : 0;
      a.write_borrowed_pieces(specs[k].name, data[k], piece, [&, k] { ++released[k]; });
    }
    a.drain();
  }
  w.finish();
  for (size_t k = 0; k < specs.size(); ++k) EXPECT_EQ(released[k].load(), 1) << k;
  ASSERT_GT(w.files().size(), 2u);  // several shards + index
  for (const auto& f : w.files())
    EXPECT_EQ(read_file(par / f.filename().string()), read_file(seq / f.filename().string())) << f;
}

TEST(AsyncWriter, OutOfOrderTensorIsAnErrorAtOnce) {
  TempDir d;
  CheckpointWriter w(d.path(), {{"a", DType::U8, {4}}, {"b", DType::U8, {2}}});
  AsyncWriter a(w, 1 << 20);
  EXPECT_THAT(error_of([&] { a.write("b", {1, 2}); }), HasSubstr("\"b\" written out of order"));
}

}  // namespace
}  // namespace fp4kit
