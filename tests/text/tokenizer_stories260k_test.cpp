// The stories260K SentencePiece-style BPE tokenizer (byte fallback, Prepend/Replace normalizer)
// against reference ids computed by llama2.c's encoder and HF `tokenizers` 0.23.2, shipped in
// shared/data (expected/stories260k.json and text/tinystories_val.stories260k.u16).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "fp4kit/text/calibration_data.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "support/shared_data.hpp"

using fp4kit::text::Tokenizer;

namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST(Stories260kTokenizer, PromptFromDataReadme) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  const Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(tok.encode("Once upon a time"), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("Once upon a time", false), (std::vector<int32_t>{403, 407, 261, 378}));
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  // generation_config.json lists [1, 2]: the model ends stories with BOS.
  EXPECT_EQ(tok.eos_ids(), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(tok.vocab_size(), 512u);
}

TEST(Stories260kTokenizer, TwelveReferenceStrings) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(expected_path, "expected/stories260k.json");
  const Tokenizer tok = Tokenizer::load(dir / "tokenizer.json");
  const auto expected = nlohmann::json::parse(slurp(expected_path));
  const auto& cases = expected.at("tokenizer_examples_llama2c_encode_bos");
  ASSERT_EQ(cases.size(), 12u);
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    EXPECT_EQ(tok.encode(text), c.at("ids").get<std::vector<int32_t>>()) << "text: " << text;
  }
}

TEST(Stories260kTokenizer, ReproducesPreTokenizedTinyStories) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(text, "text/tinystories_val.txt");
  FP4KIT_REQUIRE_SHARED(u16, "text/tinystories_val.stories260k.u16");
  const Tokenizer tok = Tokenizer::load(dir);
  const std::vector<int32_t> expected = fp4kit::text::read_token_file(u16, 2);
  ASSERT_EQ(expected.size(), 384962u);  // data README

  const auto docs = fp4kit::text::read_text_documents(text);
  EXPECT_EQ(docs.size(), 4300u);  // data README: 4,300 blocks
  std::vector<int32_t> ids;
  for (const auto& d : docs) {
    const auto e = tok.encode(d);
    ids.insert(ids.end(), e.begin(), e.end());
  }
  ASSERT_EQ(ids.size(), expected.size());
  size_t mismatches = 0, first = ids.size();
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] != expected[i] && mismatches++ == 0) first = i;
  EXPECT_EQ(mismatches, 0u) << "first mismatch at token " << first;
}

TEST(Stories260kTokenizer, DecodeInvertsEncodeOnTinyStories) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(text, "text/tinystories_val.txt");
  const Tokenizer tok = Tokenizer::load(dir);
  const auto docs = fp4kit::text::read_text_documents(text);
  size_t bad = 0;
  for (size_t i = 0; i < docs.size(); i += 7) {
    const auto ids = tok.encode(docs[i]);
    if (tok.decode(ids, /*skip_special=*/true) != docs[i]) ++bad;
  }
  EXPECT_EQ(bad, 0u);  // the data README verified decode(encode(block)) == block for all blocks
}

TEST(Stories260kTokenizer, ByteFallbackDecodesEmoji) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  const Tokenizer tok = Tokenizer::load(dir);
  // From expected/stories260k.json: the emoji is byte-fallback ids 243 162 155 131 (= byte + 3).
  const std::vector<int32_t> ids{1, 344, 423, 414, 449, 417, 410, 243, 162, 155, 131, 334, 433};
  EXPECT_EQ(tok.decode(ids, true), "emoji \xF0\x9F\x98\x80 ok");
  // A lone continuation byte cannot form a character: HF's ByteFallback gives U+FFFD.
  EXPECT_EQ(tok.decode(std::vector<int32_t>{162}, true), "\xEF\xBF\xBD");
}

TEST(Stories260kTokenizer, SpecialTokensInTextAreMatched) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  const Tokenizer tok = Tokenizer::load(dir);
  // Data README: the HF tokenizer matches "<s>" in text as the special token (id 1); the
  // Prepend normalizer applies to each stretch around it, so "x" after it gets its own "▁".
  // Expected values from HF tokenizers 0.23.2 (Tokenizer.from_file on this tokenizer.json).
  const auto with = tok.encode("x<s>x", false);
  EXPECT_EQ(with, (std::vector<int32_t>{410, 444, 1, 410, 444}));
  EXPECT_EQ(tok.decode(with, true), "x x");
  EXPECT_EQ(tok.decode(with, false), "x<s> x");
}

TEST(Stories260kTokenizer, ConcurrentEncodingGivesTheSameIds) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(text, "text/tinystories_val.txt");
  const Tokenizer tok = Tokenizer::load(dir);
  const auto docs = fp4kit::text::read_text_documents(text);
  std::vector<std::vector<int32_t>> serial;
  for (size_t i = 0; i < 400; ++i) serial.push_back(tok.encode(docs[i]));
  // Four threads share one tokenizer (and its word cache), each encoding every document.
  std::vector<size_t> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < 400; ++i)
        if (tok.encode(docs[(i + 100 * t) % 400]) != serial[(i + 100 * t) % 400]) ++mismatches[t];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, (std::vector<size_t>(4, 0)));
}
