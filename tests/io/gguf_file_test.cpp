// GGUF v3 container: the header layout of gguf.h (checked field by field here; python/tests reads
// whole files with gguf-py), pieces written in any order at fixed offsets, and the refusals that
// keep a file from looking finished when it is not.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "fp4kit/io/gguf_file.hpp"
#include "support/error_of.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using ::testing::HasSubstr;
using testing::error_of;

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

template <typename T>
T at(const std::string& s, size_t off) {
  T v;
  std::memcpy(&v, s.data() + off, sizeof(T));
  return v;
}

TEST(GgufFile, HeaderAndAlignedDataInAnyWriteOrder) {
  testing::TempDir dir;
  GgufMetadata meta;
  meta.add_string("general.architecture", "llama");
  meta.add_u32("llama.block_count", 5);
  const std::vector<uint8_t> a(3 * 4, 0xAA), b(2 * 36, 0xBB);
  {
    GgufFileWriter w(dir / "m.gguf", meta,
                     {{"a", {3}, GgmlType::F32}, {"b.weight", {64, 2}, GgmlType::NVFP4}});
    w.write(1, 36, {b.data() + 36, 36});  // second row first
    w.write(0, 0, a);
    w.write(1, 0, {b.data(), 36});
    w.finish();
  }
  const std::string s = slurp(dir / "m.gguf");
  EXPECT_EQ(s.substr(0, 4), "GGUF");
  EXPECT_EQ(at<uint32_t>(s, 4), 3u);   // version
  EXPECT_EQ(at<uint64_t>(s, 8), 2u);   // tensors
  EXPECT_EQ(at<uint64_t>(s, 16), 2u);  // key/values
  // KV 1: u64 len, "general.architecture", u32 type 8 (string), u64 len, "llama".
  size_t p = 24;
  ASSERT_EQ(at<uint64_t>(s, p), 20u);
  EXPECT_EQ(s.substr(p + 8, 20), "general.architecture");
  p += 28;
  EXPECT_EQ(at<uint32_t>(s, p), 8u);
  EXPECT_EQ(at<uint64_t>(s, p + 4), 5u);
  EXPECT_EQ(s.substr(p + 12, 5), "llama");
  p += 17;
  // KV 2: "llama.block_count" u32 (type 4) = 5.
  EXPECT_EQ(s.substr(p + 8, 17), "llama.block_count");
  p += 8 + 17;
  EXPECT_EQ(at<uint32_t>(s, p), 4u);
  EXPECT_EQ(at<uint32_t>(s, p + 4), 5u);
  p += 8;
  // Tensor infos: name, n_dims, ne..., type, offset (relative to the data section).
  EXPECT_EQ(s.substr(p + 8, 1), "a");
  p += 9;
  EXPECT_EQ(at<uint32_t>(s, p), 1u);
  EXPECT_EQ(at<uint64_t>(s, p + 4), 3u);
  EXPECT_EQ(at<uint32_t>(s, p + 12), 0u);   // F32
  EXPECT_EQ(at<uint64_t>(s, p + 16), 0u);
  p += 24;
  EXPECT_EQ(s.substr(p + 8, 8), "b.weight");
  p += 16;
  EXPECT_EQ(at<uint32_t>(s, p), 2u);
  EXPECT_EQ(at<uint64_t>(s, p + 4), 64u);
  EXPECT_EQ(at<uint64_t>(s, p + 12), 2u);
  EXPECT_EQ(at<uint32_t>(s, p + 20), 40u);  // GGML_TYPE_NVFP4
  EXPECT_EQ(at<uint64_t>(s, p + 24), 32u);  // 12 bytes of "a", padded to 32
  p += 32;
  const size_t data = (p + 31) / 32 * 32;
  ASSERT_EQ(s.size(), data + 32 + 96);  // every tensor padded to 32, the last too (as gguf-py)
  EXPECT_EQ(s.substr(data, 12), std::string(12, '\xAA'));
  EXPECT_EQ(s.substr(data + 12, 20), std::string(20, '\0'));  // padding reads as zeros
  EXPECT_EQ(s.substr(data + 32, 72), std::string(72, '\xBB'));
  EXPECT_EQ(s.substr(data + 104), std::string(24, '\0'));
}

TEST(GgufFile, RefusesOverlapsIncompleteTensorsAndBadShapes) {
  testing::TempDir dir;
  GgufMetadata meta;
  EXPECT_THAT(error_of([&] { meta.add_u32("k", 1), meta.add_u32("k", 2); }), HasSubstr("'k'"));
  EXPECT_THAT(error_of([&] {
                GgufFileWriter w(dir / "x.gguf", meta, {{"w", {48, 2}, GgmlType::NVFP4}});
              }),
              HasSubstr("'w': NVFP4 row length 48 is not a multiple of 64"));
  EXPECT_THAT(error_of([&] {
                GgufFileWriter w(dir / "x.gguf", meta,
                                 {{"t", {4}, GgmlType::F32}, {"t", {4}, GgmlType::F32}});
              }),
              HasSubstr("tensor 't' twice"));
  GgufFileWriter w(dir / "y.gguf", meta, {{"t", {4, 2}, GgmlType::BF16}});
  const std::vector<uint8_t> half(8, 1);
  w.write(0, 0, half);
  EXPECT_THAT(error_of([&] { w.write(0, 4, half); }), HasSubstr("written twice"));
  EXPECT_THAT(error_of([&] { w.write(0, 12, half); }), HasSubstr("outside its 16 bytes"));
  EXPECT_THAT(error_of([&] { w.finish(); }), HasSubstr("'t' incomplete: 8 of 16 bytes"));
}

}  // namespace
}  // namespace fp4kit
