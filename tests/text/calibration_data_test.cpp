// Calibration data readers and the window rule documented in calibration_data.hpp.
#include <gtest/gtest.h>

#include <fstream>

#include "fp4kit/error.hpp"
#include "fp4kit/text/calibration_data.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "support/error_of.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

using namespace fp4kit::text;
using fp4kit::testing::TempDir;

namespace {

std::filesystem::path write_file(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const auto path = dir / name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// s.u16 holding the ids 0, 1, ..., 49.
std::filesystem::path write_ids_0_to_49(const TempDir& dir) {
  std::string bytes;
  for (int i = 0; i < 50; ++i) bytes += std::string{static_cast<char>(i), 0};
  return write_file(dir, "s.u16", bytes);
}

using fp4kit::testing::error_of;

}  // namespace

TEST(CalibrationText, EmptyLinesSeparateStrippedDocuments) {
  TempDir dir;
  const auto path = write_file(dir, "d.txt", "\xEF\xBB\xBF" "doc one\n\n\ndoc two\r\nline2\n \n\n  doc three  \n\n \n");
  using V = std::vector<std::string>;
  // A line of spaces is content (as text.split("\n\n") keeps it), trailing whitespace is stripped;
  // the BOM is dropped, CRLF read as LF, and the whitespace-only last block is dropped.
  EXPECT_EQ(read_text_documents(path), (V{"doc one", "doc two\nline2", "doc three"}));
}

TEST(CalibrationText, MissingOrEmptyFilesAreErrorsNamingThem) {
  TempDir dir;
  const auto missing = dir / "nope.txt";
  EXPECT_NE(error_of([&] { read_text_documents(missing); }).find(missing.string() + ": calibration data file not found"),
            std::string::npos);
  const auto empty = write_file(dir, "empty.txt", "");
  EXPECT_NE(error_of([&] { read_text_documents(empty); }).find("empty.txt: calibration data file is empty"),
            std::string::npos);
  const auto blank = write_file(dir, "blank.txt", "\n\n  \n");
  EXPECT_NE(error_of([&] { read_text_documents(blank); }).find("blank.txt: calibration data file contains no text"),
            std::string::npos);
  const auto bad = write_file(dir, "bad.txt", "ok\n\xC3(");
  EXPECT_NE(error_of([&] { read_text_documents(bad); }).find("bad.txt: not valid UTF-8 text (byte offset 3)"),
            std::string::npos);
}

TEST(CalibrationJsonl, ReadsTheChosenField) {
  TempDir dir;
  const auto path = write_file(dir, "d.jsonl",
                               "{\"text\": \"first\", \"body\": \"B1\"}\n\n{\"text\": \"\", \"body\": \"B2\"}\n"
                               "{\"text\": \"third\\nline\", \"body\": \"B3\"}\n");
  using V = std::vector<std::string>;
  EXPECT_EQ(read_jsonl_documents(path, "text"), (V{"first", "third\nline"}));  // empty text skipped
  EXPECT_EQ(read_jsonl_documents(path, "body"), (V{"B1", "B2", "B3"}));
  const std::string msg = error_of([&] { read_jsonl_documents(path, "missing"); });
  EXPECT_NE(msg.find("d.jsonl:1: no string field 'missing'"), std::string::npos) << msg;
  const auto broken = write_file(dir, "b.jsonl", "{\"text\": \"a\"}\n{oops\n");
  EXPECT_NE(error_of([&] { read_jsonl_documents(broken, "text"); }).find("b.jsonl:2: invalid JSON"), std::string::npos);
}

TEST(CalibrationTokens, LittleEndianIdFiles) {
  TempDir dir;
  const auto u16 = write_file(dir, "t.u16", std::string("\x01\x00\x34\x12\xFF\xFF", 6));
  EXPECT_EQ(read_token_file(u16, 2), (std::vector<int32_t>{1, 0x1234, 0xFFFF}));
  const auto u32 = write_file(dir, "t.u32", std::string("\x01\x00\x00\x00\x78\x56\x34\x12", 8));
  EXPECT_EQ(read_token_file(u32, 4), (std::vector<int32_t>{1, 0x12345678}));
  const auto odd = write_file(dir, "odd.u16", std::string("\x01\x00\x02", 3));
  EXPECT_NE(error_of([&] { read_token_file(odd, 2); }).find("odd.u16: size 3 bytes is not a multiple of 2"),
            std::string::npos);
  EXPECT_EQ(resolve_format(u16, CalibrationFormat::Auto), CalibrationFormat::TokensU16);
  EXPECT_EQ(resolve_format(u32, CalibrationFormat::Auto), CalibrationFormat::TokensU32);
  EXPECT_EQ(resolve_format(dir / "x.jsonl", CalibrationFormat::Auto), CalibrationFormat::Jsonl);
  EXPECT_EQ(resolve_format(dir / "x.txt", CalibrationFormat::Auto), CalibrationFormat::Text);
  EXPECT_EQ(resolve_format(u16, CalibrationFormat::TokensU32), CalibrationFormat::TokensU32);
}

TEST(CalibrationWindows, EvenlySpacedFromStartToEnd) {
  using V = std::vector<int64_t>;
  // start_i = floor(i * (T - L) / (N - 1)), computed by hand.
  EXPECT_EQ(evenly_spaced_window_starts(100, 4, 10), (V{0, 30, 60, 90}));
  EXPECT_EQ(evenly_spaced_window_starts(40, 4, 10), (V{0, 10, 20, 30}));  // exactly fits: back to back
  EXPECT_EQ(evenly_spaced_window_starts(107, 3, 10), (V{0, 48, 97}));
  EXPECT_EQ(evenly_spaced_window_starts(5, 1, 5), (V{0}));
  const std::string msg = error_of([] { evenly_spaced_window_starts(39, 4, 10); });
  EXPECT_NE(msg.find("39 tokens, fewer than --samples 4 x --seq-len 10 = 40"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { evenly_spaced_window_starts(39, 0, 10); }).find("must be positive"), std::string::npos);
}

TEST(CalibrationWindows, PreTokenizedFileGivesTheChosenSlices) {
  TempDir dir;
  const auto path = write_ids_0_to_49(dir);
  CalibrationOptions opt;
  opt.samples = 3;
  opt.seq_len = 4;
  const CalibrationSamples s = load_calibration_data(path, nullptr, opt);
  ASSERT_EQ(s.samples(), 3);
  EXPECT_EQ(s.stream_tokens, 50);
  EXPECT_EQ(s.starts, (std::vector<int64_t>{0, 23, 46}));  // i * 46 / 2
  EXPECT_EQ(std::vector<int32_t>(s.sample(1).begin(), s.sample(1).end()), (std::vector<int32_t>{23, 24, 25, 26}));
  EXPECT_EQ(std::vector<int32_t>(s.sample(2).begin(), s.sample(2).end()), (std::vector<int32_t>{46, 47, 48, 49}));
  // Text needs a tokenizer.
  const auto txt = write_file(dir, "t.txt", "hello\n");
  EXPECT_NE(error_of([&] { load_calibration_data(txt, nullptr, opt); }).find("t.txt: text calibration data needs a tokenizer"),
            std::string::npos);
  // Too short: the error names the file.
  opt.samples = 13;
  EXPECT_NE(error_of([&] { load_calibration_data(path, nullptr, opt); }).find("s.u16: calibration data has 50 tokens"),
            std::string::npos);
}

TEST(CalibrationWindows, TextAndPreTokenizedTinyStoriesGiveTheSameWindows) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(text, "text/tinystories_val.txt");
  FP4KIT_REQUIRE_SHARED(u16, "text/tinystories_val.stories260k.u16");
  const Tokenizer tok = Tokenizer::load(model);
  CalibrationOptions opt;
  opt.samples = 16;
  opt.seq_len = 256;
  const CalibrationSamples from_text = load_calibration_data(text, &tok, opt);
  const CalibrationSamples from_ids = load_calibration_data(u16, &tok, opt);
  EXPECT_EQ(from_text.documents, 4300);
  EXPECT_EQ(from_text.stream_tokens, 384962);  // data README
  EXPECT_EQ(from_text.starts, from_ids.starts);
  EXPECT_EQ(from_text.ids, from_ids.ids);
  EXPECT_EQ(from_text.ids.front(), 1);  // the stream starts with the first block's BOS
  EXPECT_EQ(from_text.starts.back() + 256, 384962);
  // An id outside the tokenizer's vocabulary is rejected when a tokenizer is given.
  TempDir dir;
  const auto big = write_file(dir, "big.u16", std::string("\x00\x02", 2));  // id 512
  opt.samples = 1;
  opt.seq_len = 1;
  EXPECT_NE(error_of([&] { load_calibration_data(big, &tok, opt); }).find("outside the tokenizer's vocabulary of 512"),
            std::string::npos);
}

TEST(CalibrationWindows, OnlyTheFirstBudgetOfTokensIsRead) {
  TempDir dir;
  const auto path = write_ids_0_to_49(dir);
  CalibrationOptions opt;
  opt.samples = 3;
  opt.seq_len = 4;
  opt.stream_budget = 20;  // windows spread over ids 0..19 only: i * 16 / 2
  CalibrationSamples s = load_calibration_data(path, nullptr, opt);
  EXPECT_EQ(s.stream_tokens, 20);
  EXPECT_EQ(s.starts, (std::vector<int64_t>{0, 8, 16}));
  EXPECT_EQ(std::vector<int32_t>(s.sample(2).begin(), s.sample(2).end()), (std::vector<int32_t>{16, 17, 18, 19}));
  // N x L above the budget: N x L tokens are read (back to back windows).
  opt.samples = 6;
  s = load_calibration_data(path, nullptr, opt);
  EXPECT_EQ(s.stream_tokens, 24);
  EXPECT_EQ(s.starts, (std::vector<int64_t>{0, 4, 8, 12, 16, 20}));
  // load_token_stream's max_tokens.
  CalibrationOptions t;
  t.max_tokens = 7;
  EXPECT_EQ(load_token_stream(path, nullptr, t), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6}));
}

TEST(CalibrationText, DocumentsAreReadOnlyUntilTheBudgetIsReached) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(text, "text/tinystories_val.txt");
  FP4KIT_REQUIRE_SHARED(u16, "text/tinystories_val.stories260k.u16");
  const Tokenizer tok = Tokenizer::load(model);
  CalibrationOptions opt;
  opt.samples = 4;
  opt.seq_len = 64;
  opt.stream_budget = 3000;
  const CalibrationSamples from_text = load_calibration_data(text, &tok, opt);
  const CalibrationSamples from_ids = load_calibration_data(u16, &tok, opt);
  EXPECT_EQ(from_text.stream_tokens, 3000);
  EXPECT_LT(from_text.documents, 100);  // of 4300: reading stopped early
  EXPECT_GT(from_text.documents, 1);
  EXPECT_EQ(from_text.starts, (std::vector<int64_t>{0, 978, 1957, 2936}));  // i * 2936 / 3
  EXPECT_EQ(from_text.ids, from_ids.ids);
  // Text that ends without a newline and lines longer than the reader's 1 MiB block.
  TempDir dir;
  const std::string long_line(3u << 20, 'a');
  const auto f = write_file(dir, "long.txt", "first\n\n" + long_line + "\nb\n\n\nlast");
  const auto docs = read_text_documents(f);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0], "first");
  EXPECT_EQ(docs[1], long_line + "\nb");
  EXPECT_EQ(docs[2], "last");
  const auto j = write_file(dir, "d.jsonl", "{\"text\": \"" + long_line + "\"}\n\n{\"text\": \"x\"}");
  EXPECT_EQ(read_jsonl_documents(j, "text"), (std::vector<std::string>{long_line, "x"}));
  // A bad byte's offset counts from the file's start, across blocks.
  const auto bad = write_file(dir, "bad.txt", long_line + "\n\xff");
  EXPECT_NE(error_of([&] { read_text_documents(bad); }).find("byte offset " + std::to_string(long_line.size() + 1)),
            std::string::npos);
}
