// Fused 3-D expert tensors (mlp.experts.gate_up_proj [E, 2I, H] with gate rows first,
// mlp.experts.down_proj [E, H, I]; spec section 4) run exactly like the per-expert layout, and
// their statistics carry the per-expert OUTPUT names.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "engine/engine_support.hpp"
#include "fp4kit/engine/stats_collector.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

// Rewrites the Qwen2-MoE fixture with fused expert tensors (bytes copied, BF16 kept).
void write_fused_copy(const Checkpoint& src, const std::filesystem::path& out, int layers,
                      int experts) {
  std::filesystem::create_directories(out);
  std::filesystem::copy_file(src.dir() / "config.json", out / "config.json");
  std::map<std::string, std::pair<TensorSpec, std::vector<uint8_t>>> items;
  for (const auto& n : src.tensor_names()) {
    if (n.find(".mlp.experts.") != std::string::npos) continue;
    auto b = src.bytes(n);
    items[n] = {{n, src.info(n).dtype, src.info(n).shape}, {b.begin(), b.end()}};
  }
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
    std::vector<uint8_t> gu, dn;
    uint64_t inter = 0, hidden = 0;
    for (int e = 0; e < experts; ++e) {
      const std::string x = p + std::to_string(e) + ".";
      for (const char* part : {"gate_proj", "up_proj"}) {
        auto b = src.bytes(x + part + ".weight");
        gu.insert(gu.end(), b.begin(), b.end());
      }
      auto d = src.bytes(x + "down_proj.weight");
      dn.insert(dn.end(), d.begin(), d.end());
      inter = src.info(x + "gate_proj.weight").shape[0];
      hidden = src.info(x + "gate_proj.weight").shape[1];
    }
    const uint64_t E = static_cast<uint64_t>(experts);
    items[p + "gate_up_proj"] = {{p + "gate_up_proj", DType::BF16, {E, 2 * inter, hidden}}, gu};
    items[p + "down_proj"] = {{p + "down_proj", DType::BF16, {E, hidden, inter}}, dn};
  }
  std::vector<TensorSpec> specs;
  for (const auto& [n, it] : items) specs.push_back(it.first);
  CheckpointWriter w(out, specs);
  for (const auto& [n, it] : items) w.write(n, it.second);
  w.finish();
}

TEST(FusedExperts, SameLogitsAndPerExpertStatNames) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-qwen2moe");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  auto src = Checkpoint::open(model);
  write_fused_copy(*src, tmp / "fused", 5, 4);
  auto fused = Checkpoint::open(tmp / "fused");
  ASSERT_TRUE(fused->has("model.layers.0.mlp.experts.gate_up_proj"));
  ASSERT_FALSE(fused->has("model.layers.0.mlp.experts.0.gate_proj.weight"));
  const auto ids = engine::read_token_ids(data);
  const std::vector<std::vector<int32_t>> seqs = {{ids.begin(), ids.begin() + 300},
                                                  {ids.begin() + 300, ids.begin() + 500}};
  auto run = [&](const Checkpoint& c, engine::StatsCollector* stats) {
    engine::Engine eng(c);
    std::vector<float> all;
    eng.run(seqs, {}, stats, [&](size_t, const float* lg, size_t len, size_t v) {
      all.insert(all.end(), lg, lg + len * v);
    });
    return all;
  };
  engine::StatsCollector s1, s2;
  const auto a = run(*src, &s1);
  const auto b = run(*fused, &s2);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  const auto r1 = s1.result(), r2 = s2.result();
  EXPECT_EQ(r1.input_amax, r2.input_amax);  // same names (per expert), same values
  EXPECT_EQ(r1.routed_tokens, r2.routed_tokens);
  EXPECT_EQ(r2.token_count.at("model.layers.3.mlp.experts.2.down_proj"), 500);
}

}  // namespace
}  // namespace fp4kit
