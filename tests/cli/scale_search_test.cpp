// quantize --scales hessian on the real stories260K MoE (routed Mixtral): per linear, the
// layer-output error tr(dW H dW^T) (H = the block-diagonal X^T X the stats file holds) is never
// above max's, recomputed in float64 from the dequantized checkpoints; linears with too few
// tokens fall back to mse and the report says so, with exactly mse's bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "support/checkpoint_values.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

namespace fs = std::filesystem;
using testing::quote;
using testing::run_command;

std::vector<float> dequantized(const Checkpoint& q, const std::string& m, size_t rows, size_t cols) {
  std::vector<float> out(rows * cols);
  const float s2 = testing::scalar_f32(q, m + ".weight_scale_2");
  nvfp4_dequantize(q.bytes(m + ".weight").data(), q.bytes(m + ".weight_scale").data(), rows, cols,
                   s2, out.data());
  return out;
}

double layer_error(const std::vector<float>& w, const std::vector<float>& dq,
                   const std::vector<double>& h, size_t rows, size_t cols) {
  double t = 0;
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < cols / 16; ++j)
      for (size_t a = 0; a < 16; ++a)
        for (size_t b = 0; b < 16; ++b) {
          const size_t ia = r * cols + 16 * j + a, ib = r * cols + 16 * j + b;
          t += (double(w[ia]) - dq[ia]) * h[j * 256 + a * 16 + b] * (double(w[ib]) - dq[ib]);
        }
  return t;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

TEST(ScaleSearch, HessianNeverWorseThanMaxPerLinearAndFallsBackToMse) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  const std::string bin = testing::fp4kit_binary();
  const fs::path stats = tmp / "s.safetensors";
  auto r = run_command(bin + " calibrate " + quote(model.string()) + " --data " +
                       quote(data.string()) + " --samples 8 --seq-len 64 --hessian raw -o " +
                       quote(stats.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto quantize = [&](const std::string& name, const std::string& extra) {
    const auto q = run_command(bin + " quantize " + quote(model.string()) + " " +
                               quote((tmp / name).string()) + " --weights-only --report " +
                               quote((tmp / (name + ".json")).string()) + " " + extra);
    EXPECT_EQ(q.exit_code, 0) << q.output;
  };
  quantize("max", "");
  quantize("mse", "--scales mse");
  quantize("hess", "--scales hessian --hessian-min-tokens 1 --stats " + quote(stats.string()));
  quantize("few", "--scales hessian --hessian-min-tokens 1000000 --stats " + quote(stats.string()));

  // GPTQ needs all of X^T X (calibrate --full-xtx): said, nothing written.
  const auto g = run_command(bin + " quantize " + quote(model.string()) + " " +
                             quote((tmp / "g").string()) + " --weights-only --gptq --stats " +
                             quote(stats.string()));
  EXPECT_EQ(g.exit_code, 1) << g.output;
  EXPECT_NE(g.output.find("--full-xtx"), std::string::npos) << g.output;
  EXPECT_FALSE(fs::exists(tmp / "g"));

  const ActivationStats st = read_stats_file(stats);
  auto src = Checkpoint::open(model);
  auto qmax = Checkpoint::open(tmp / "max");
  auto qh = Checkpoint::open(tmp / "hess");
  size_t compared = 0, better = 0;
  const auto report = read_json(tmp / "hess.json");
  for (const auto& t : report["tensors"]) {
    if (t["action"] != "quantize") continue;
    const std::string m = t["name"];
    ASSERT_EQ(t["block_scales"], "hessian") << m;
    const size_t rows = t["shape"][0], cols = t["shape"][1];
    const auto w = testing::decode(*src, m + ".weight");
    const auto& h = st.hessian_blocks.at(m);
    const double e_max = layer_error(w, dequantized(*qmax, m, rows, cols), h, rows, cols);
    const double e_h = layer_error(w, dequantized(*qh, m, rows, cols), h, rows, cols);
    EXPECT_LE(e_h, e_max * (1 + 1e-5)) << m;
    ++compared;
    better += e_h < 0.95 * e_max;
  }
  EXPECT_GE(compared, 50u);
  EXPECT_GT(better, compared / 2) << "the Hessian objective should lower most layers' error";

  // Too few tokens everywhere: every linear uses mse (bytes equal --scales mse), and says why.
  const auto few = read_json(tmp / "few.json");
  for (const auto& t : few["tensors"])
    if (t["action"] == "quantize") {
      EXPECT_EQ(t["block_scales"], "mse") << t["name"];
      EXPECT_NE(t["block_scales_fallback"].get<std::string>().find("too few calibration tokens"),
                std::string::npos);
    }
  auto qf = Checkpoint::open(tmp / "few");
  auto qm = Checkpoint::open(tmp / "mse");
  for (const auto& n : qm->tensor_names())
    EXPECT_EQ(testing::bytes_of(*qf, n), testing::bytes_of(*qm, n)) << n;
}

}  // namespace
}  // namespace fp4kit
