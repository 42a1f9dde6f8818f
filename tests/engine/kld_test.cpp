// eval's comparison metrics on the real stories260K model: a model against itself has KLD 0 and
// 100 % top-1 agreement; copies with growing weight noise have growing KLD.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "engine/engine_support.hpp"
#include "fp4kit/engine/evaluate.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

// A float32 copy of `src` where every 2-D linear weight w becomes w * (1 + eps * u), u uniform
// in [-1, 1] from a fixed mt19937 stream (embeddings and norms untouched).
void write_perturbed_copy(const Checkpoint& src, const std::filesystem::path& out, double eps) {
  std::filesystem::create_directories(out);
  std::filesystem::copy_file(src.dir() / "config.json", out / "config.json");
  std::vector<TensorSpec> specs;
  for (const auto& n : src.tensor_names()) {
    const auto& t = src.info(n);
    specs.push_back({n, DType::F32, t.shape});
  }
  CheckpointWriter w(out, specs);
  std::mt19937 rng(1234);
  for (const auto& n : src.tensor_names()) {
    const auto& t = src.info(n);
    std::vector<float> v(t.numel());
    decode_to_f32(src.bytes(n).data(), t.dtype, v.size(), v.data());
    const bool linear = t.shape.size() == 2 && n.find("proj") != std::string::npos;
    if (linear)
      for (float& x : v) x *= static_cast<float>(1.0 + eps * (2.0 * (rng() / 4294967296.0) - 1.0));
    w.write(n, {reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4});
  }
  w.finish();
}

TEST(Kld, ModelAgainstItselfIsZeroAndNoiseMakesItGrow) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto stream = engine::read_token_ids(data);
  auto base = Checkpoint::open(model);
  engine::EvalOptions o;
  o.ctx = 256;
  o.max_windows = 8;  // 2,048 scored tokens
  const auto self = engine::evaluate(*base, base.get(), stream, o);
  ASSERT_TRUE(self.kld.has_value());
  EXPECT_EQ(self.kld->count, 8u * 256u);
  EXPECT_EQ(self.kld->kld_mean.value, 0.0);
  EXPECT_EQ(self.kld->kld_max, 0.0);
  EXPECT_EQ(self.kld->same_top.value, 1.0);
  EXPECT_EQ(self.kld->dp_rms.value, 0.0);
  EXPECT_DOUBLE_EQ(self.quant.ppl, self.base->ppl);

  testing::TempDir tmp;
  double last_kld = 0.0, last_top = 1.0;
  for (double eps : {0.01, 0.05, 0.2}) {
    const auto dir = tmp / ("noise-" + std::to_string(eps));
    write_perturbed_copy(*base, dir, eps);
    auto noisy = Checkpoint::open(dir);
    const auto r = engine::evaluate(*noisy, base.get(), stream, o);
    EXPECT_GT(r.kld->kld_mean.value, last_kld) << "eps " << eps;
    EXPECT_LE(r.kld->same_top.value, last_top) << "eps " << eps;
    EXPECT_GT(r.kld->kld_mean.value, 0.0);
    last_kld = r.kld->kld_mean.value;
    last_top = r.kld->same_top.value;
  }
  EXPECT_LT(last_top, 1.0);
}

TEST(Kld, SavedBaseLogProbsGiveTheSameNumbers) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(routed, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto stream = engine::read_token_ids(data);
  auto base = Checkpoint::open(model);
  auto q = Checkpoint::open(routed);
  testing::TempDir tmp;
  engine::EvalOptions o;
  o.ctx = 256;
  o.max_windows = 4;
  o.save_base = tmp / "base.bin";
  o.group_bytes = 600 * 512 * 4;  // two windows per group: exercises grouping
  const auto direct = engine::evaluate(*q, base.get(), stream, o);
  engine::EvalOptions o2;
  o2.base_logits = tmp / "base.bin";
  // Same grouping of windows: sgemm rounding may depend on how many rows go in one product.
  o2.group_bytes = o.group_bytes;
  const auto reused = engine::evaluate(*q, nullptr, std::vector<int32_t>{}, o2);
  EXPECT_EQ(reused.windows, 4u);
  EXPECT_EQ(reused.kld->count, direct.kld->count);
  EXPECT_DOUBLE_EQ(reused.kld->kld_mean.value, direct.kld->kld_mean.value);
  EXPECT_DOUBLE_EQ(reused.base->ppl, direct.base->ppl);
  EXPECT_DOUBLE_EQ(reused.quant.ppl, direct.quant.ppl);
  EXPECT_GT(direct.kld->kld_mean.value, 0.0);  // the routed model is a different function
}

}  // namespace
}  // namespace fp4kit
