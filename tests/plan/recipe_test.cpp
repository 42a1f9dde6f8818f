// Recipe files and globs.
#include <gtest/gtest.h>

#include <fstream>

#include "fp4kit/error.hpp"
#include "fp4kit/plan/glob.hpp"
#include "fp4kit/plan/recipe.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

TEST(Glob, StarCrossesDotsLikePythonFnmatch) {
  EXPECT_TRUE(glob_match("model.layers.*.mlp.gate", "model.layers.12.mlp.gate"));
  EXPECT_FALSE(glob_match("model.layers.*.mlp.gate", "model.layers.12.mlp.gate_proj"));
  EXPECT_TRUE(glob_match("*experts.[0-3].*", "model.layers.0.mlp.experts.2.up_proj"));
  EXPECT_FALSE(glob_match("*experts.[0-3].*", "model.layers.0.mlp.experts.4.up_proj"));
  EXPECT_TRUE(glob_match("lm_hea?", "lm_head"));
  EXPECT_TRUE(glob_match("model.visual*", "model.visual.blocks.0.attn.qkv"));
}

TEST(Recipe, TextFormatWithCommentsAndOrigins) {
  PlanOptions o = parse_recipe(
      "# keep attention of layer 0\n"
      "exclude model.layers.0.self_attn.*   # trailing comment\n"
      "\n"
      "include model.layers.0.self_attn.o_proj\n"
      "quantize_linear_attn true\n",
      "r.txt");
  ASSERT_EQ(o.rules.size(), 2u);
  EXPECT_EQ(o.rules[0].kind, Rule::Kind::Exclude);
  EXPECT_EQ(o.rules[0].glob, "model.layers.0.self_attn.*");
  EXPECT_EQ(o.rules[0].origin, "r.txt:2");
  EXPECT_EQ(o.rules[1].kind, Rule::Kind::Include);
  EXPECT_EQ(o.rules[1].origin, "r.txt:4");
  EXPECT_TRUE(o.quantize_linear_attn);
}

TEST(Recipe, JsonFormat) {
  PlanOptions o = parse_recipe(
      R"({"rules":[{"exclude":"*.mlp.gate"},{"include":"lm_head"}],"quantize_linear_attn":false})",
      "r.json");
  ASSERT_EQ(o.rules.size(), 2u);
  EXPECT_EQ(o.rules[0].glob, "*.mlp.gate");
  EXPECT_EQ(o.rules[1].kind, Rule::Kind::Include);
  EXPECT_EQ(o.rules[1].origin, "r.json:rules[1]");
  EXPECT_FALSE(o.quantize_linear_attn);
}

TEST(Recipe, ErrorsNameFileAndLine) {
  struct Case { const char* text; const char* where; };
  for (Case c : {Case{"include a\nexlude b\n", "r.txt:2"},
                 Case{"include\n", "r.txt:1"},
                 Case{"# x\n\nexclude a b\n", "r.txt:3"},
                 Case{"quantize_linear_attn maybe\n", "r.txt:1"},
                 Case{R"({"rules":[{"exclude":"a"},{"drop":"b"}]})", "r.txt:rules[1]"},
                 Case{R"({"rules":[{"exclude":3}]})", "r.txt:rules[0]"},
                 Case{R"({"rule":[]})", "r.txt"},
                 Case{R"({"rules": [)", "r.txt"}}) {
    try {
      parse_recipe(c.text, "r.txt");
      ADD_FAILURE() << "no error for " << c.text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.where), std::string::npos) << e.what();
    }
  }
}

TEST(Recipe, LoadFromFileAndApply) {
  testing::TempDir dir;
  std::ofstream(dir / "recipe.txt") << "exclude *.o_proj\n";
  PlanOptions base;
  base.rules.push_back({Rule::Kind::Include, "x", "--include"});
  apply_recipe(base, load_recipe(dir / "recipe.txt"));
  ASSERT_EQ(base.rules.size(), 2u);
  EXPECT_EQ(base.rules[1].origin, (dir / "recipe.txt").string() + ":1");
  EXPECT_THROW(load_recipe(dir / "missing.txt"), Error);
}

}  // namespace
}  // namespace fp4kit
