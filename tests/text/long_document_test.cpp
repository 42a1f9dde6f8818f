// A long document without paragraph breaks is encoded in pieces (text/piece_encoder.hpp): the ids
// must be those of encoding the whole document, which the real tokenizers here give as reference
// (Qwen3: byte-level BPE behind a split regex; stories260K: SentencePiece-style BPE over the
// whole document as one word).
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "fp4kit/text/calibration_data.hpp"
#include "fp4kit/text/piece_encoder.hpp"
#include "fp4kit/text/token_reader.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

using namespace fp4kit::text;
using fp4kit::testing::TempDir;

namespace {

std::string read_all(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// WikiText-2's test text as one line: its newlines become spaces.
std::string one_line(const std::filesystem::path& p) {
  std::string s = read_all(p);
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  const size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
  return s.substr(b, e - b + 1);
}

// Encodes `text` through a PieceEncoder with small pieces, fed in fragments of `fragment` bytes
// cut at character boundaries.
std::vector<int32_t> in_pieces(const Tokenizer& tok, const std::string& text, size_t piece, size_t fragment,
                               uint64_t* forced = nullptr) {
  PieceEncoder enc(tok, true, true, piece);
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + fragment);
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    enc.append(std::string_view(text).substr(pos, end - pos), ids);
    pos = end;
  }
  EXPECT_TRUE(enc.finish(ids));
  if (forced) *forced = enc.forced_cuts();
  return ids;
}

void expect_same_ids(const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  ASSERT_EQ(got.size(), want.size());
  size_t first = 0;
  while (first < got.size() && got[first] == want[first]) ++first;
  EXPECT_EQ(first, got.size()) << "first different id at " << first;
}

}  // namespace

TEST(LongDocument, PiecesGiveTheWholeDocumentsIdsForQwen3AndStories260k) {
  FP4KIT_REQUIRE_SHARED(qwen_dir, "tokenizers/qwen3");
  FP4KIT_REQUIRE_SHARED(stories_dir, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(wiki, "text/wikitext2_test.txt");
  const std::string text = one_line(wiki);  // 1.3 MB, no newline
  ASSERT_GT(text.size(), 1000000u);
  for (const auto& dir : {qwen_dir, stories_dir}) {
    const Tokenizer tok = Tokenizer::load(dir);
    const std::vector<int32_t> whole = tok.encode(text, true);
    // 16 KiB pieces: about 80 cuts, each where the tokenizer splits anyway.
    uint64_t forced = 1;
    SCOPED_TRACE(dir.string());
    expect_same_ids(in_pieces(tok, text, 16 << 10, 5000, &forced), whole);
    EXPECT_EQ(forced, 0u);
    // Fragments larger than a piece, and the default 1 MiB pieces.
    expect_same_ids(in_pieces(tok, text, PieceEncoder::kPieceBytes, 300000), whole);
  }
}

TEST(LongDocument, TextWithoutSpacesIsCutWhereTheTokenizerSplits) {
  FP4KIT_REQUIRE_SHARED(qwen_dir, "tokenizers/qwen3");
  const Tokenizer tok = Tokenizer::load(qwen_dir);
  // Chinese has no spaces: the cuts fall before punctuation, where Qwen's pattern splits.
  std::string zh;
  const char* sentences[] = {"我们今天去公园玩，天气很好。", "小猫在树下睡觉，它很开心！",
                             "老师说：明天考试，请大家准备。"};
  for (int i = 0; zh.size() < 200000; ++i) zh += sentences[(i * 7 + i / 3) % 3];
  uint64_t forced = 1;
  expect_same_ids(in_pieces(tok, zh, 8 << 10, 3000, &forced), tok.encode(zh, true));
  EXPECT_EQ(forced, 0u);
}

TEST(LongDocument, AWordLongerThanTheSearchIsCutAnywayAndCounted) {
  // A BPE whose merges double runs of 'a' up to 512: every 256-byte check window joins across
  // its middle, so no position qualifies and each piece is cut where it must be (the stated
  // rule: counted, nothing lost, ids near the cut may differ from the whole word's).
  TempDir dir;
  nlohmann::json vocab = nlohmann::json::object(), merges = nlohmann::json::array();
  std::string run = "a";
  vocab[run] = 0;
  for (int i = 1; i <= 9; ++i) {
    merges.push_back(run + " " + run);
    run += run;
    vocab[run] = i;
  }
  const nlohmann::json tj = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  std::ofstream(dir / "tokenizer.json") << tj.dump();
  const Tokenizer tok = Tokenizer::load(dir / "tokenizer.json");
  const std::string word(100000, 'a');
  uint64_t forced = 0;
  const auto ids = in_pieces(tok, word, 8 << 10, 3000, &forced);
  EXPECT_EQ(forced, 12u);  // every piece: 12 x 8 KiB cut, 1696 bytes left for finish()
  size_t bytes = 0;
  for (const int32_t id : ids) bytes += tok.id_to_token(id)->size();
  EXPECT_EQ(bytes, word.size());
}

TEST(LongDocument, ReaderGivesTheWholeDocumentsIdsForALineOfManyMegabytes) {
  FP4KIT_REQUIRE_SHARED(qwen_dir, "tokenizers/qwen3");
  FP4KIT_REQUIRE_SHARED(wiki, "text/wikitext2_test.txt");
  const Tokenizer tok = Tokenizer::load(qwen_dir);
  std::string text = one_line(wiki);
  text = text + " " + text;  // 2.6 MB: three 1 MiB pieces, a line across reader blocks
  TempDir dir;
  const auto path = dir / "long.txt";
  std::ofstream(path, std::ios::binary) << "\xEF\xBB\xBF  " << text << " \r\n\r\n";
  CalibrationOptions o;
  int64_t docs = 0;
  expect_same_ids(load_token_stream(path, &tok, o, &docs), tok.encode(text, true));
  EXPECT_EQ(docs, 1);
  // JSONL: the same document as one line's field.
  const auto jsonl = dir / "long.jsonl";
  std::ofstream(jsonl, std::ios::binary) << nlohmann::json{{"text", text}}.dump() << "\n";
  expect_same_ids(load_token_stream(jsonl, &tok, o), tok.encode(text, true));
}

TEST(LongDocument, LineReaderKeepsCrlfAndCharactersWholeAcrossBlocks) {
  TempDir dir;
  const std::string a((1u << 20) - 1, 'a');  // the block ends between '\r' and '\n' / inside "é"
  const auto crlf = dir / "crlf.txt";
  std::ofstream(crlf, std::ios::binary) << a << "\r\nb\r\n\r\nc";
  EXPECT_EQ(read_text_documents(crlf), (std::vector<std::string>{a + "\nb", "c"}));
  const auto utf8 = dir / "utf8.txt";
  std::ofstream(utf8, std::ios::binary) << a << "\xC3\xA9\n\nx";
  EXPECT_EQ(read_text_documents(utf8), (std::vector<std::string>{a + "\xC3\xA9", "x"}));
  // A character cut by the end of the file is an error at its offset.
  const auto cut = dir / "cut.txt";
  std::ofstream(cut, std::ios::binary) << a << "\xC3";
  try {
    read_text_documents(cut);
    ADD_FAILURE() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("byte offset " + std::to_string(a.size())), std::string::npos) << e.what();
  }
}
