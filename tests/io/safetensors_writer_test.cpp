// The streaming checkpoint writer: exact bytes against the format definition, round trips through
// the reader, sharding boundaries, the index, determinism and misuse.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <thread>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
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

using testing::error_of;

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Deterministic filler: byte i of tensor k.
std::string payload(size_t n, int k) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + k * 17 + 7) & 0xff);
  return s;
}

void write_all(CheckpointWriter& w, const std::vector<TensorSpec>& specs) {
  for (size_t k = 0; k < specs.size(); ++k)
    w.write(specs[k].name, as_bytes(payload(specs[k].nbytes(), static_cast<int>(k))));
  w.finish();
}

TEST(CheckpointWriter, ExactBytesOfOneFile) {
  TempDir dir;
  CheckpointWriter w(dir.path(), {{"a", DType::F16, {2}}, {"b", DType::U8, {3}}});
  w.write("a", as_bytes("ABCD"));
  w.write("b", as_bytes("xyz"));
  w.finish();
  // From the format: u64 LE header length, header padded with spaces to a multiple of 8, data.
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"U8","shape":[3],"data_offsets":[4,7]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  EXPECT_EQ(read_file(dir / "model.safetensors"), testing::le64(header.size()) + header + "ABCDxyz");
  EXPECT_EQ(w.files(), std::vector<fs::path>{dir / "model.safetensors"});
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
}

TEST(CheckpointWriter, RoundTripEveryDtypeZeroSizeAndScalar) {
  TempDir dir;
  std::vector<TensorSpec> specs = {
      {"bool", DType::BOOL, {3}},        {"u8", DType::U8, {5}},          {"i8", DType::I8, {2, 2}},
      {"i16", DType::I16, {3}},          {"i32", DType::I32, {}},         {"i64", DType::I64, {2}},
      {"f16", DType::F16, {1, 3}},       {"bf16", DType::BF16, {7}},      {"f32", DType::F32, {2, 3}},
      {"f64", DType::F64, {1}},          {"e4m3", DType::F8_E4M3, {16}},  {"e5m2", DType::F8_E5M2, {9}},
      {"e8m0", DType::F8_E8M0, {4, 1}},  {"empty", DType::BF16, {0, 64}}, {"unicodé", DType::U8, {1}}};
  CheckpointWriter w(dir.path(), specs, kDefaultMaxShardBytes, {{"format", "pt"}, {"k", "v"}});
  write_all(w, specs);
  auto ck = Checkpoint::open(dir.path());
  ASSERT_EQ(ck->tensor_names().size(), specs.size());
  for (size_t k = 0; k < specs.size(); ++k) {
    const auto& info = ck->info(specs[k].name);
    EXPECT_EQ(info.dtype, specs[k].dtype) << specs[k].name;
    EXPECT_EQ(info.shape, specs[k].shape) << specs[k].name;
    auto b = ck->bytes(specs[k].name);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()),
              payload(specs[k].nbytes(), static_cast<int>(k)))
        << specs[k].name;
  }
  EXPECT_EQ(ck->shards()[0]->metadata().at("k"), "v");
  // The data area starts 8-byte aligned.
  const std::string raw = read_file(dir / "model.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
}

struct ShardCase {
  std::vector<uint64_t> sizes;
  uint64_t max;
  std::vector<std::vector<int>> expected;  // tensor indices per shard
};

TEST(CheckpointWriter, ShardingBoundaries) {
  const std::vector<ShardCase> cases = {
      {{4, 4, 4}, 12, {{0, 1, 2}}},          // exactly full: one shard
      {{4, 4, 4}, 11, {{0, 1}, {2}}},        // one byte short
      {{4, 4, 4}, 8, {{0, 1}, {2}}},
      {{4, 4, 4}, 4, {{0}, {1}, {2}}},
      {{2, 20, 2}, 8, {{0}, {1}, {2}}},      // larger than max: a shard of its own
      {{20, 2, 2}, 8, {{0}, {1, 2}}},
      {{0, 0, 8, 0}, 8, {{0, 1, 2, 3}}},     // zero-size tensors join the current shard
      {{3, 3, 3, 3, 3}, 7, {{0, 1}, {2, 3}, {4}}},
  };
  for (const auto& c : cases) {
    TempDir dir;
    std::vector<TensorSpec> specs;
    for (size_t i = 0; i < c.sizes.size(); ++i)
      specs.push_back({fmt::format("t{}", i), DType::U8, {c.sizes[i]}});
    CheckpointWriter w(dir.path(), specs, c.max);
    write_all(w, specs);
    const size_t n = c.expected.size();
    auto ck = Checkpoint::open(dir.path());
    ASSERT_EQ(ck->shards().size(), n);
    for (size_t s = 0; s < n; ++s) {
      char file[64];
      if (n == 1)
        std::snprintf(file, sizeof file, "model.safetensors");
      else
        std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, n);
      for (int t : c.expected[s])
        EXPECT_EQ(ck->file_of(specs[t].name).path().filename(), file)
            << "max " << c.max << " tensor " << t;
    }
    if (n > 1) {
      auto index = nlohmann::json::parse(read_file(dir / "model.safetensors.index.json"));
      uint64_t total = 0;
      for (auto s : c.sizes) total += s;
      EXPECT_EQ(index["metadata"]["total_size"], total);
      EXPECT_EQ(index["weight_map"].size(), c.sizes.size());
      EXPECT_EQ(w.files().size(), n + 1);  // shards + index
    }
    for (size_t k = 0; k < specs.size(); ++k) {
      auto b = ck->bytes(specs[k].name);
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()),
                payload(specs[k].nbytes(), static_cast<int>(k)));
    }
  }
}

// Shards are fsynced by background threads (at most 4 at once, so 9 shards queue): after
// finish_writing() every file is complete and readable while the syncs may still run, and
// wait_durable() (which finish() is) only waits; asking for it before finish_writing() is misuse.
TEST(CheckpointWriter, ShardsCompleteBeforeTheirBackgroundSyncsEnd) {
  TempDir dir;
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 18; ++i) specs.push_back({fmt::format("t{}", i), DType::U8, {100'000}});
  CheckpointWriter w(dir.path(), specs, 200'000);
  EXPECT_THAT(error_of([&] { w.wait_durable(); }), HasSubstr("before finish_writing"));
  for (size_t k = 0; k < specs.size(); ++k)
    w.write(specs[k].name, as_bytes(payload(specs[k].nbytes(), static_cast<int>(k))));
  w.finish_writing();
  auto ck = Checkpoint::open(dir.path());
  ASSERT_EQ(ck->shards().size(), 9u);
  for (size_t k = 0; k < specs.size(); ++k) {
    auto b = ck->bytes(specs[k].name);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()),
              payload(specs[k].nbytes(), static_cast<int>(k)));
  }
  w.wait_durable();
  w.finish();  // already durable: nothing left
  EXPECT_EQ(w.files().size(), 10u);
}

TEST(CheckpointWriter, IndexTextIsSortedAndHfStyled) {
  TempDir dir;
  std::vector<TensorSpec> specs = {{"z", DType::U8, {4}}, {"a", DType::U8, {4}}};
  CheckpointWriter w(dir.path(), specs, 4);
  write_all(w, specs);
  // huggingface_hub writes json.dumps(index, indent=2, sort_keys=True) + "\n"
  EXPECT_EQ(read_file(dir / "model.safetensors.index.json"),
            "{\n  \"metadata\": {\n    \"total_size\": 8\n  },\n  \"weight_map\": {\n"
            "    \"a\": \"model-00002-of-00002.safetensors\",\n"
            "    \"z\": \"model-00001-of-00002.safetensors\"\n  }\n}\n");
}

TEST(CheckpointWriter, DeterministicBytes) {
  TempDir a, b;
  std::vector<TensorSpec> specs = {{"x", DType::BF16, {3, 5}}, {"y", DType::F32, {7}},
                                   {"w", DType::F8_E4M3, {33}}};
  for (const TempDir* d : {&a, &b}) {
    CheckpointWriter w(d->path(), specs, 40);
    write_all(w, specs);
  }
  for (const char* f : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                        "model.safetensors.index.json"})
    EXPECT_EQ(read_file(a / f), read_file(b / f)) << f;
}

TEST(CheckpointWriter, NoTensorsGivesHeaderOnlyFile) {
  TempDir dir;
  CheckpointWriter w(dir.path(), {});
  w.finish();
  auto f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->metadata().at("format"), "pt");
}

TEST(CheckpointWriterMisuse, WrongOrderWrongSizeExtraAndMissing) {
  TempDir dir;
  CheckpointWriter w(dir.path(), {{"a", DType::F32, {2}}, {"b", DType::U8, {1}}});
  EXPECT_THAT(error_of([&] { w.write("b", as_bytes("x")); }),
              AllOf(HasSubstr("\"b\""), HasSubstr("out of order"), HasSubstr("\"a\" is next")));
  EXPECT_THAT(error_of([&] { w.write("a", as_bytes("1234567")); }),
              AllOf(HasSubstr("\"a\""), HasSubstr("7 bytes"), HasSubstr("needs 8")));
  w.write("a", as_bytes("12345678"));
  EXPECT_THAT(error_of([&] { w.finish(); }), AllOf(HasSubstr("\"b\""), HasSubstr("never written")));
  w.write("b", as_bytes("x"));
  EXPECT_THAT(error_of([&] { w.write("c", as_bytes("x")); }),
              HasSubstr("after all declared tensors"));
  w.finish();
}

TEST(CheckpointWriterMisuse, BadDeclarations) {
  TempDir dir;
  EXPECT_THAT(error_of([&] {
                CheckpointWriter w(dir.path(), {{"a", DType::U8, {1}}, {"a", DType::U8, {1}}});
              }),
              HasSubstr("\"a\" declared twice"));
  EXPECT_THAT(error_of([&] { CheckpointWriter w(dir.path(), {{"__metadata__", DType::U8, {1}}}); }),
              HasSubstr("reserved"));
  EXPECT_THAT(error_of([&] {
                CheckpointWriter w(dir.path(), {{"h", DType::F32, {1ull << 32, 1ull << 31}}});
              }),
              AllOf(HasSubstr("\"h\""), HasSubstr("overflows")));
  EXPECT_THAT(error_of([&] { CheckpointWriter w(dir.path(), {{"\xff", DType::U8, {1}}}); }),
              HasSubstr("UTF-8"));
}

TEST(CheckpointWriter, TensorWrittenInPiecesGivesTheSameFile) {
  TempDir one, parts;
  const std::vector<TensorSpec> specs = {{"a", DType::U8, {3, 4}}, {"b", DType::U8, {2}}};
  const std::string a = payload(12, 1), b = payload(2, 2);
  {
    CheckpointWriter w(one.path(), specs);
    w.write("a", as_bytes(a));
    w.write("b", as_bytes(b));
    w.finish();
  }
  {
    CheckpointWriter w(parts.path(), specs);
    w.write_part("a", as_bytes(a.substr(0, 4)), false);
    w.write_part("a", as_bytes(a.substr(4, 0)), false);  // an empty piece is harmless
    w.write_part("a", as_bytes(a.substr(4, 8)), true);
    w.write("b", as_bytes(b));
    w.finish();
  }
  EXPECT_EQ(read_file(parts / "model.safetensors"), read_file(one / "model.safetensors"));
}

TEST(CheckpointWriter, PiecesThatDoNotAddUpAreErrors) {
  const std::vector<TensorSpec> specs = {{"a", DType::U8, {8}}, {"b", DType::U8, {2}}};
  {
    TempDir d;
    CheckpointWriter w(d.path(), specs);
    w.write_part("a", as_bytes("abcd"), false);
    EXPECT_THAT(error_of([&] { w.write_part("a", as_bytes("efghi"), false); }),
                HasSubstr("tensor \"a\": 9 bytes written but U8 [8] needs 8"));
  }
  {
    TempDir d;
    CheckpointWriter w(d.path(), specs);
    w.write_part("a", as_bytes("abcd"), false);
    EXPECT_THAT(error_of([&] { w.write_part("a", as_bytes("ef"), true); }),
                HasSubstr("tensor \"a\": 6 bytes written but U8 [8] needs 8"));
  }
  {
    TempDir d;
    CheckpointWriter w(d.path(), specs);
    w.write_part("a", as_bytes("abcd"), false);
    EXPECT_THAT(error_of([&] { w.write("b", as_bytes("xy")); }),
                HasSubstr("written out of order: \"a\" is next (and only partly written)"));
  }
  {
    TempDir d;
    CheckpointWriter w(d.path(), specs);
    w.write_part("a", as_bytes("abcd"), false);
    EXPECT_THAT(error_of([&] { w.finish(); }), HasSubstr("tensor \"a\" was only partly written (4 of 8 bytes)"));
  }
}

// Positional writing: places taken in the declared order (one tensor in pieces, an empty one),
// then the bytes written by 4 threads in a shuffled order across 4 shards: the same files as the
// sequential writes (whose bytes ExactBytesOfOneFile checks against the format).
TEST(CheckpointWriter, PositionalWritesFromSeveralThreadsGiveTheSameFiles) {
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 40; ++i)
    specs.push_back({fmt::format("t{}", i), DType::U8, {static_cast<uint64_t>(i == 7 ? 0 : 1000 + 37 * i)}});
  TempDir seq, par;
  {
    CheckpointWriter w(seq.path(), specs, 20'000);
    write_all(w, specs);
  }
  std::vector<std::string> data;
  for (size_t k = 0; k < specs.size(); ++k) data.push_back(payload(specs[k].nbytes(), static_cast<int>(k)));
  CheckpointWriter w(par.path(), specs, 20'000);
  std::vector<std::pair<CheckpointWriter::Slot, std::span<const uint8_t>>> jobs;
  for (size_t k = 0; k < specs.size(); ++k) {
    const auto bytes = as_bytes(data[k]);
    if (k == 3) {  // in two pieces
      jobs.emplace_back(w.reserve(specs[k].name, 100, false), bytes.subspan(0, 100));
      jobs.emplace_back(w.reserve(specs[k].name, bytes.size() - 100, true), bytes.subspan(100));
    } else {
      jobs.emplace_back(w.reserve(specs[k].name, bytes.size(), true), bytes);
    }
  }
  EXPECT_THAT(error_of([&] { w.reserve("t0", 1, true); }), HasSubstr("after all declared tensors"));
  std::shuffle(jobs.begin(), jobs.end(), std::mt19937(42));
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t j = t; j < jobs.size(); j += 4) w.write_at(jobs[j].first, jobs[j].second);
    });
  for (auto& t : threads) t.join();
  w.finish();
  ASSERT_EQ(w.files().size(), 5u);  // 4 shards + index
  for (const auto& f : w.files())
    EXPECT_EQ(read_file(par / f.filename().string()), read_file(seq / f.filename().string())) << f;
}

// A place taken but never written is an error at finish, naming the file; a slot of the wrong
// size is refused.
TEST(CheckpointWriterMisuse, ReservedButNotWritten) {
  TempDir d;
  CheckpointWriter w(d.path(), {{"a", DType::U8, {4}}, {"b", DType::U8, {2}}});
  const auto a = w.reserve("a", 4, true);
  EXPECT_THAT(error_of([&] { w.write_at(a, as_bytes("abc")); }), HasSubstr("3 bytes for a slot of 4"));
  w.write("b", as_bytes("xy"));
  EXPECT_THAT(error_of([&] { w.finish(); }),
              AllOf(HasSubstr("model.safetensors"), HasSubstr("a reserved tensor was not written")));
}

}  // namespace
}  // namespace fp4kit
