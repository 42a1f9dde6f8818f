// Tokenizer building blocks on small hand-made inputs whose results are computed by hand from
// the Hugging Face rules (or quoted from HF's own documentation where stated).
#include <gtest/gtest.h>

#include <fstream>

#include "fp4kit/error.hpp"
#include "fp4kit/text/byte_level.hpp"
#include "fp4kit/text/pre_tokenizer.hpp"
#include "fp4kit/text/regex.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "fp4kit/text/unicode.hpp"
#include "fp4kit/text/utf8.hpp"
#include "support/error_of.hpp"
#include "support/temp_dir.hpp"

using namespace fp4kit::text;
using fp4kit::testing::TempDir;

namespace {

std::filesystem::path write_json(const TempDir& dir, const std::string& name, const nlohmann::json& j) {
  const auto path = dir / name;
  std::ofstream(path) << j.dump();
  return path;
}

// A tokenizer.json with no normalizer / pre-tokenizer: the whole input is one BPE word.
nlohmann::json tiny_bpe(nlohmann::json merges) {
  return {
      {"version", "1.0"},
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder", nullptr},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", false},
        {"vocab", {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"c", 3}, {"ab", 4}, {"bc", 5}, {"abc", 6}, {"aa", 7}}},
        {"merges", merges}}},
  };
}

using fp4kit::testing::error_of;

}  // namespace

TEST(ByteLevel, Gpt2ByteMap) {
  // bytes_to_unicode: printable Latin-1 maps to itself, the rest to 256, 257, ... in byte order:
  // 0x00..0x20 -> U+0100..U+0120, 0x7F..0xA0 -> U+0121..U+0142, 0xAD -> U+0143.
  EXPECT_EQ(byte_to_unicode('A'), "A");
  EXPECT_EQ(byte_to_unicode(0x20), "\xC4\xA0");  // U+0120 'Ġ'
  EXPECT_EQ(byte_to_unicode(0x0A), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(byte_to_unicode(0x7F), "\xC4\xA1");  // U+0121
  EXPECT_EQ(byte_to_unicode(0xAD), "\xC5\x83");  // U+0143 'Ń'
  EXPECT_EQ(byte_to_unicode(0xE9), "\xC3\xA9");  // printable: itself
  for (int b = 0; b < 256; ++b) {
    size_t pos = 0;
    EXPECT_EQ(byte_level_char_to_byte(next_code_point(byte_to_unicode(static_cast<uint8_t>(b)), pos)), b);
  }
}

TEST(Utf8, LossyReplacesMaximalSubparts) {
  // Rust's from_utf8_lossy (Unicode "maximal subpart" practice).
  EXPECT_EQ(utf8_lossy("a\xF0\x9F" "b"), "a\xEF\xBF\xBD" "b");                      // truncated 4-byte: one U+FFFD
  EXPECT_EQ(utf8_lossy("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");                    // C0 is never a lead byte
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");    // surrogate
  EXPECT_EQ(utf8_lossy("ok \xE2\x82\xAC"), "ok \xE2\x82\xAC");
  EXPECT_EQ(find_invalid_utf8("ab\xE2\x82"), 2u);
  EXPECT_EQ(find_invalid_utf8("\xE2\x82\xAC"), std::string_view::npos);
}

TEST(Unicode, NormalFormsAndClasses) {
  EXPECT_EQ(normalize_unicode("e\xCC\x81", NormalForm::NFC), "\xC3\xA9");
  EXPECT_EQ(normalize_unicode("\xC3\xA9", NormalForm::NFD), "e\xCC\x81");
  EXPECT_EQ(normalize_unicode("\xEF\xAC\x81", NormalForm::NFC), "\xEF\xAC\x81");  // ﬁ kept by NFC
  EXPECT_EQ(normalize_unicode("\xEF\xAC\x81", NormalForm::NFKC), "fi");           // and split by NFKC
  // Unicode 9.0 NFC, as HF tokenizers (normalizers.NFC().normalize_str gives a U+0316 U+1DFA):
  // U+1DFA (ccc 218, Unicode 14) is unknown there, so it is not reordered before U+0316 (ccc
  // 220) as current NFC (Python's unicodedata: a U+1DFA U+0316) would do.
  EXPECT_EQ(normalize_unicode("a\xCC\x96\xE1\xB7\xBA", NormalForm::NFC), "a\xCC\x96\xE1\xB7\xBA");
  // Known marks still reorder and compose: a U+0316 U+0300 -> à U+0316.
  EXPECT_EQ(normalize_unicode("a\xCC\x96\xCC\x80", NormalForm::NFC), "\xC3\xA0\xCC\x96");
  EXPECT_EQ(to_lower_unicode("ÀB"), "àb");
  // Rust's str::to_lowercase documentation example (final sigma becomes ς).
  EXPECT_EQ(to_lower_unicode("ὈΔΥΣΣΕΎΣ"), "ὀδυσσεύς");
  EXPECT_TRUE(is_whitespace(0x3000));
  EXPECT_TRUE(is_whitespace(0x85));
  EXPECT_FALSE(is_whitespace(0x200B));
  EXPECT_TRUE(is_alphanumeric(0x4E2D));
  EXPECT_FALSE(is_alphanumeric('-'));
}

TEST(SplitBehavior, MatchesHuggingFaceDocumentation) {
  // The example in HF tokenizers' normalizer.rs (SplitDelimiterBehavior): "the-final--countdown".
  const std::string s = "the-final--countdown";
  const Regex dash("-", "test");
  const auto spans = spans_from_matches(s, dash.find_all(s));
  const auto pieces = [&](SplitBehavior b) {
    std::vector<std::string> out;
    for (const auto& [x, y] : apply_split_behavior(spans, b)) out.push_back(s.substr(x, y - x));
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(SplitBehavior::Removed), (V{"the", "final", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::Isolated), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::MergedWithPrevious), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::MergedWithNext), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::Contiguous), (V{"the", "-", "final", "--", "countdown"}));
}

TEST(Regex, UnicodePropertiesAndEmptyMatches) {
  const Regex letters(R"(\p{L}+)", "test");
  const std::string s = "ab 中文 12";
  const auto m = letters.find_all(s);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(s.substr(m[1].first, m[1].second - m[1].first), "中文");
  // x* on "ab": empty matches at 0, 1, 2 (Oniguruma binding iteration).
  const Regex star("x*", "test");
  EXPECT_EQ(star.find_all("ab").size(), 3u);
  EXPECT_NE(error_of([] { Regex bad("(", "tok.json: pre_tokenizer Split"); }).find("tok.json: pre_tokenizer Split"),
            std::string::npos);
}

TEST(Regex, WhitespaceIsUnicodeWhiteSpaceAsInOniguruma) {
  // U+180E MONGOLIAN VOWEL SEPARATOR has not been White_Space since Unicode 6.3, but PCRE2's \s
  // still matches it; HF tokenizers (Oniguruma) does not. U+0085 and U+3000 are White_Space.
  const std::string mvs = "\xE1\xA0\x8E", nel = "\xC2\x85", ideo = "\xE3\x80\x80";
  const Regex space(R"(\s+)", "test");
  EXPECT_TRUE(space.find_all(mvs).empty());
  EXPECT_EQ(space.find_all(nel + ideo + " \t\n").size(), 1u);
  const Regex other(R"([^\s\p{L}\p{N}]+)", "test");  // as in the Qwen / Llama-3 split regex
  ASSERT_EQ(other.find_all(mvs + "(").size(), 1u);
  EXPECT_EQ(other.find_all(mvs + "(")[0], (std::pair<size_t, size_t>{0, 4}));
  const Regex not_space(R"(\S)", "test");
  EXPECT_EQ(not_space.find_all(mvs).size(), 1u);
  // Escaped backslashes and literal ']' first in a class are kept as they are.
  EXPECT_EQ(with_oniguruma_spaces(R"(\\s[]\s])"),
            R"(\\s[]\x{09}-\x{0D}\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}])");
}

TEST(BpeModel, MergesByRankLowestFirst) {
  TempDir dir;
  // Ranks: "b c" = 0, "a b" = 1, "a bc" = 2. For "abc", (b,c) wins over (a,b) -> a|bc -> abc.
  const auto t1 = Tokenizer::load(write_json(dir, "t1.json", tiny_bpe({"b c", "a b", "a bc"})));
  EXPECT_EQ(t1.encode("abc"), (std::vector<int32_t>{6}));
  // Ranks: "a b" = 0, "b c" = 1, "ab c" = 2 (pair format). (a,b) first -> ab|c -> abc.
  const auto t2 = Tokenizer::load(
      write_json(dir, "t2.json", tiny_bpe(nlohmann::json::array({nlohmann::json::array({"a", "b"}), nlohmann::json::array({"b", "c"}),
                                          nlohmann::json::array({"ab", "c"})}))));
  EXPECT_EQ(t2.encode("abc"), (std::vector<int32_t>{6}));
  // Without "ab c", ab|c stays two tokens.
  const auto t3 = Tokenizer::load(write_json(dir, "t3.json", tiny_bpe({"a b", "b c"})));
  EXPECT_EQ(t3.encode("abc"), (std::vector<int32_t>{4, 3}));
  // Equal ranks: the leftmost pair merges first: "aaa" -> aa|a.
  const auto t4 = Tokenizer::load(write_json(dir, "t4.json", tiny_bpe({"a a"})));
  EXPECT_EQ(t4.encode("aaa"), (std::vector<int32_t>{7, 1}));
  EXPECT_EQ(t4.encode("aaaa"), (std::vector<int32_t>{7, 7}));
}

TEST(BpeModel, UnknownCharactersFuseIntoOneUnk) {
  TempDir dir;
  auto j = tiny_bpe({"a b"});
  const auto fused = Tokenizer::load(write_json(dir, "f.json", j));
  EXPECT_EQ(fused.encode("zzabzz"), (std::vector<int32_t>{0, 4, 0}));
  j["model"]["fuse_unk"] = false;
  const auto plain = Tokenizer::load(write_json(dir, "p.json", j));
  EXPECT_EQ(plain.encode("zzabzz"), (std::vector<int32_t>{0, 0, 4, 0, 0}));
}

TEST(BpeModel, ByteFallbackSpellsUnknownCharactersAsBytes) {
  TempDir dir;
  auto j = tiny_bpe({"a b"});
  j["model"]["byte_fallback"] = true;
  j["model"]["vocab"]["<0xC3>"] = 8;
  j["model"]["vocab"]["<0xA9>"] = 9;
  j["decoder"] = {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}};
  const auto t = Tokenizer::load(write_json(dir, "bf.json", j));
  // "é" = C3 A9: both byte pieces exist; "€" (E2 82 AC) has none, so it becomes <unk>.
  EXPECT_EQ(t.encode("ab\xC3\xA9"), (std::vector<int32_t>{4, 8, 9}));
  EXPECT_EQ(t.encode("\xE2\x82\xAC" "a"), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(t.decode(std::vector<int32_t>{4, 8, 9}), "ab\xC3\xA9");
}

TEST(AddedTokens, StripFlagsAndSingleWord) {
  TempDir dir;
  auto j = tiny_bpe({"a b"});
  j["added_tokens"] = {
      {{"id", 10}, {"content", "<m>"}, {"special", true}, {"lstrip", true}, {"rstrip", false},
       {"single_word", false}, {"normalized", false}},
      {{"id", 11}, {"content", "<n>"}, {"special", true}, {"lstrip", false}, {"rstrip", true},
       {"single_word", false}, {"normalized", false}},
      {{"id", 12}, {"content", "ab"}, {"special", false}, {"lstrip", false}, {"rstrip", false},
       {"single_word", true}, {"normalized", false}},
      {{"id", 13}, {"content", "<mm>"}, {"special", true}, {"lstrip", false}, {"rstrip", false},
       {"single_word", false}, {"normalized", false}},
  };
  j["model"]["vocab"][" "] = 14;
  const auto t = Tokenizer::load(write_json(dir, "added.json", j));
  // lstrip: the spaces before <m> belong to it; the space after stays text.
  EXPECT_EQ(t.encode("a  <m> b"), (std::vector<int32_t>{1, 10, 14, 2}));
  // rstrip: the spaces after <n> belong to it.
  EXPECT_EQ(t.encode("a <n>  b"), (std::vector<int32_t>{1, 14, 11, 2}));
  // single_word "ab": matched alone, not inside "cab" (there BPE merges a+b into 4 instead).
  EXPECT_EQ(t.encode("ab c"), (std::vector<int32_t>{12, 14, 3}));
  EXPECT_EQ(t.encode("cab"), (std::vector<int32_t>{3, 4}));
  // Longest match at the same position: "<mm>" rather than "<m>"... which needs "m>" next.
  EXPECT_EQ(t.encode("<mm>"), (std::vector<int32_t>{13}));
  EXPECT_TRUE(t.is_special(10));
  EXPECT_FALSE(t.is_special(12));
}

TEST(TokenizerErrors, UnsupportedComponentsNameFileAndComponent) {
  TempDir dir;
  auto j = tiny_bpe({});
  j["model"]["type"] = "Unigram";
  auto msg = error_of([&] { Tokenizer::load(write_json(dir, "unigram.json", j)); });
  EXPECT_NE(msg.find("unigram.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model type 'Unigram'"), std::string::npos) << msg;

  j = tiny_bpe({});
  j["normalizer"] = {{"type", "BertNormalizer"}};
  msg = error_of([&] { Tokenizer::load(write_json(dir, "bert.json", j)); });
  EXPECT_NE(msg.find("bert.json: normalizer type 'BertNormalizer'"), std::string::npos) << msg;

  j = tiny_bpe({});
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "BertPreTokenizer"}}}}};
  msg = error_of([&] { Tokenizer::load(write_json(dir, "pre.json", j)); });
  EXPECT_NE(msg.find("pre.json: pre_tokenizer type 'BertPreTokenizer'"), std::string::npos) << msg;

  j = tiny_bpe({"a x"});
  msg = error_of([&] { Tokenizer::load(write_json(dir, "merge.json", j)); });
  EXPECT_NE(msg.find("merge #0 uses 'x'"), std::string::npos) << msg;

  msg = error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(msg.find("no tokenizer.json"), std::string::npos) << msg;
  msg = error_of([&] { Tokenizer::load(dir / "nope.json"); });
  EXPECT_NE(msg.find("nope.json: tokenizer file not found"), std::string::npos) << msg;
}

TEST(TokenizerConfig, BosFromConfigAndAddBosSwitch) {
  TempDir dir;
  auto j = tiny_bpe({"a b"});
  j["added_tokens"] = {{{"id", 20}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                       {{"id", 21}, {"content", "</s>"}, {"special", true}, {"normalized", false}}};
  write_json(dir, "tokenizer.json", j);
  write_json(dir, "tokenizer_config.json",
             {{"bos_token", {{"content", "<s>"}}}, {"eos_token", "</s>"}, {"add_bos_token", true}});
  write_json(dir, "generation_config.json", {{"eos_token_id", {21, 7}}});
  const auto t = Tokenizer::load(dir.path());
  EXPECT_EQ(t.bos_id(), 20);
  EXPECT_EQ(t.eos_id(), 21);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{21, 7}));
  // No post-processor in tokenizer.json, add_bos_token true: BOS is added.
  EXPECT_EQ(t.encode("ab"), (std::vector<int32_t>{20, 4}));
  EXPECT_EQ(t.encode("ab", false), (std::vector<int32_t>{4}));
}
