// The official Qwen3 tokenizer (byte-level BPE, NFC, Qwen split regex, 26 added tokens).
// Expected ids were produced by the real Hugging Face `tokenizers` 0.23.2 library
// (Tokenizer.from_file(".../tokenizers/qwen3/tokenizer.json").encode(text).ids), an independent
// implementation; python/tests/test_tokenizer_conformance.py compares whole corpora.
#include <gtest/gtest.h>

#include "fp4kit/error.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "support/shared_data.hpp"

using fp4kit::text::Tokenizer;

namespace {

const Tokenizer& qwen3(const std::filesystem::path& dir) {
  // The file is 11 MB: load it once for all tests of this file.
  static const Tokenizer tok = Tokenizer::load(dir);
  return tok;
}

}  // namespace

TEST(Qwen3Tokenizer, EncodesLikeHuggingFace) {
  FP4KIT_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  const Tokenizer& tok = qwen3(dir);
  EXPECT_EQ(tok.encode("Once upon a time"), (std::vector<int32_t>{12522, 5193, 264, 882}));
  EXPECT_EQ(tok.encode("Hello  world\n\n"), (std::vector<int32_t>{9707, 220, 1879, 271}));
  EXPECT_EQ(tok.encode("\xC3\xA9" "cole"), (std::vector<int32_t>{134670}));
  EXPECT_EQ(tok.encode("\xE4\xB8\xAD\xE6\x96\x87 123"), (std::vector<int32_t>{104811, 220, 16, 17, 18}));
  EXPECT_EQ(tok.encode("I'LL go"), (std::vector<int32_t>{40, 6, 4086, 728}));
  EXPECT_EQ(tok.encode("\xF0\x9F\x98\x80"), (std::vector<int32_t>{141334}));  // 😀
}

TEST(Qwen3Tokenizer, NfcComposesCombiningAccents) {
  FP4KIT_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  const Tokenizer& tok = qwen3(dir);
  // "e" + U+0301 COMBINING ACUTE is NFC-composed to "é" first, so it encodes like "école".
  EXPECT_EQ(tok.encode("e\xCC\x81" "cole"), (std::vector<int32_t>{134670}));
}

TEST(Qwen3Tokenizer, SpecialAndAddedTokens) {
  FP4KIT_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  const Tokenizer& tok = qwen3(dir);
  const std::vector<int32_t> chat{151644, 872, 198, 13048, 151645};
  EXPECT_EQ(tok.encode("<|im_start|>user\nHi<|im_end|>"), chat);
  EXPECT_EQ(tok.encode(" <think>x</think>"), (std::vector<int32_t>{220, 151667, 87, 151668}));
  EXPECT_EQ(tok.decode(chat), "<|im_start|>user\nHi<|im_end|>");
  EXPECT_EQ(tok.decode(chat, /*skip_special=*/true), "user\nHi");
  EXPECT_TRUE(tok.is_special(151644));
  EXPECT_FALSE(tok.is_special(151667));  // <think> is an added token, not a special one
}

TEST(Qwen3Tokenizer, ConfigTokens) {
  FP4KIT_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  const Tokenizer& tok = qwen3(dir);
  // tokenizer_config.json: bos_token null, eos_token <|im_end|>, pad_token <|endoftext|>.
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_EQ(tok.eos_id(), 151645);
  EXPECT_EQ(tok.pad_id(), 151643);
  EXPECT_TRUE(tok.special_prefix().empty());  // Qwen adds no BOS
  EXPECT_EQ(tok.vocab_size(), 151669u);       // 151,643 vocabulary entries + 26 added tokens
  EXPECT_EQ(tok.token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(tok.id_to_token(12522), "Once");
}

TEST(Qwen3Tokenizer, RejectsInvalidUtf8) {
  FP4KIT_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  const Tokenizer& tok = qwen3(dir);
  try {
    tok.encode("ok \xFF bad");
    FAIL() << "expected fp4kit::Error";
  } catch (const fp4kit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8 (byte offset 3)"), std::string::npos) << e.what();
  }
}
