// The engine on the real stories260K weights, against the reference values of
// shared/data/README.md and expected/stories260k.json (numpy fp64 / transformers fp32 runs).
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/engine_support.hpp"
#include "support/shared_data.hpp"

namespace fp4kit {
namespace {

nlohmann::json expected_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

TEST(Stories260k, GreedyContinuationOfOnceUponATimeMatchesReference) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(expected, "expected/stories260k.json");
  const auto j = expected_json(expected);
  const auto ref = j["greedy"]["ids_bf16_checkpoint_fp32_compute"].get<std::vector<int32_t>>();
  const size_t identical = j["greedy"]["bf16_checkpoint_identical_generated_tokens_fp32_compute"];
  ASSERT_EQ(identical, 185u);
  // "Once upon a time" = [1, 403, 407, 261, 378] = BOS + the first 4 greedy tokens (README).
  const auto prompt = j["greedy"]["prompt_once_upon_a_time_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(prompt, std::vector<int32_t>(ref.begin(), ref.begin() + 5));
  auto ckpt = Checkpoint::open(model);
  engine::Engine eng(*ckpt);
  const size_t steps = 1 + identical - prompt.size();  // generated tokens 5..185
  const auto got = engine::greedy_generate(eng, prompt, steps);
  const std::vector<int32_t> want(ref.begin() + 5, ref.begin() + 5 + static_cast<ptrdiff_t>(steps));
  EXPECT_EQ(got, want);
}

TEST(Stories260k, PerplexityOfFirst30kTokensMatchesReadme) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto stream = engine::read_token_ids(data);
  ASSERT_EQ(stream.size(), 384962u);
  const auto r = testing::protocol_ppl(model, stream, 30000);
  EXPECT_EQ(r.count, 29999u);
  // README: bf16 checkpoint, fp32 compute: NLL 1.42805, PPL 4.1706 (transformers 4.170555).
  EXPECT_NEAR(r.mean_nll, 1.4280491839975227, 2e-5);
  EXPECT_NEAR(r.ppl, 4.170555264904446, 1e-4);
}

// The split-expert MoE checkpoints compute the dense function (README "Verified (split
// experts)"): same perplexity to fp32 noise; the routed Mixtral is a different function, PPL 4.2222.
TEST(Stories260k, MoeVariantsPerplexity) {
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  const auto stream = engine::read_token_ids(data);
  const size_t tokens = 30000;
  for (const char* name : {"stories260k-mixtral", "stories260k-qwen2moe", "stories260k-qwen3moe"}) {
    const auto r = testing::protocol_ppl(dense.parent_path() / name, stream, tokens);
    EXPECT_NEAR(r.ppl, 4.170555264904446, 2e-4) << name;
  }
  const auto routed =
      testing::protocol_ppl(dense.parent_path() / "stories260k-mixtral-routed", stream, tokens);
  EXPECT_NEAR(routed.ppl, 4.2222, 1e-4);
}

}  // namespace
}  // namespace fp4kit
