// quantize --gptq --data (X^T X gathered layer by layer by the engine) on the real stories260K
// routed Mixtral: the same bytes as `calibrate --full-xtx` + `quantize --gptq --stats` (W4A16
// with Hessian scales, W4A4); the statistics held at once are one layer's (against the sizes the
// whole-model stats file holds); experts that no token reached keep their plain codes, reported;
// --gptq-sequential changes later layers but not the first (whose inputs are the embeddings),
// and its layer 1 equals GPTQ from the X^T X that `calibrate --full-xtx` measures on a checkpoint
// whose layer 0 is the sequential output's (layer 1 sees what the quantized layer 0 computes).
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/checkpoint_fingerprint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "support/checkpoint_values.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

namespace fs = std::filesystem;
using testing::quote;
using testing::run_command;

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

struct Fixture {
  fs::path model, data;
  testing::TempDir tmp;
  std::string bin = testing::fp4kit_binary();

  std::string run(const std::string& args, int expect = 0) {
    const auto r = run_command(bin + " " + args);
    EXPECT_EQ(r.exit_code, expect) << args << "\n" << r.output;
    return r.output;
  }
  std::string quantize(const std::string& out, const std::string& extra, int expect = 0) {
    return run("quantize " + quote(model.string()) + " " + quote((tmp / out).string()) +
                   " --report " + quote((tmp / (out + ".json")).string()) + " " + extra,
               expect);
  }
  std::string data_args(int samples, int seq_len) const {
    return "--data " + quote(data.string()) + " --samples " + std::to_string(samples) +
           " --seq-len " + std::to_string(seq_len);
  }
  void expect_same_tensors(const std::string& a, const std::string& b) {
    auto qa = Checkpoint::open(tmp / a);
    auto qb = Checkpoint::open(tmp / b);
    ASSERT_EQ(qa->tensor_names(), qb->tensor_names());
    for (const auto& n : qa->tensor_names())
      EXPECT_EQ(testing::bytes_of(*qa, n), testing::bytes_of(*qb, n)) << a << " vs " << b << ": " << n;
  }
};

#define GPTQ_FIXTURE(f)                                                        \
  FP4KIT_REQUIRE_SHARED(model_, "models/stories260k-mixtral-routed");          \
  FP4KIT_REQUIRE_SHARED(data_, "text/tinystories_val.stories260k.u16");        \
  Fixture f;                                                                   \
  f.model = model_;                                                            \
  f.data = data_

TEST(GptqLayers, SameBytesAsFullXtxStatsW4A16HessianAndW4A4) {
  GPTQ_FIXTURE(f);
  const std::string d = f.data_args(8, 64);
  const std::string raw = quote((f.tmp / "raw.st").string());
  const std::string w4 = quote((f.tmp / "w4a4.st").string());
  const std::string plain = quote((f.tmp / "plain.st").string());
  const std::string m = quote(f.model.string());
  f.run("calibrate " + m + " " + d + " --hessian raw --full-xtx -o " + raw);
  f.run("calibrate " + m + " " + d + " --hessian w4a4 --full-xtx -o " + w4);
  f.run("calibrate " + m + " " + d + " -o " + plain);

  const std::string h = "--weights-only --gptq --scales hessian --hessian-min-tokens 1 ";
  f.quantize("a16", h + "--stats " + raw);
  f.quantize("b16", h + d);
  f.expect_same_tensors("a16", "b16");
  f.quantize("a4", "--gptq --stats " + w4);
  f.quantize("b4", "--gptq --stats " + plain + " " + d);  // stats: input scales only
  f.expect_same_tensors("a4", "b4");
  // The report says per tensor what GPTQ did, as the stats-file path does.
  for (const std::string n : {"16", "4"}) {
    const auto ra = read_json(f.tmp / ("a" + n + ".json"))["tensors"];
    const auto rb = read_json(f.tmp / ("b" + n + ".json"))["tensors"];
    ASSERT_EQ(ra.size(), rb.size());
    size_t gptq = 0;
    for (size_t i = 0; i < ra.size(); ++i) {
      EXPECT_EQ(ra[i].value("gptq", false), rb[i].value("gptq", false)) << ra[i]["name"];
      EXPECT_EQ(ra[i].value("block_scales", ""), rb[i].value("block_scales", "")) << ra[i]["name"];
      gptq += rb[i].value("gptq", false);
    }
    EXPECT_GE(gptq, 60u);
  }
}

// Memory: the pass holds one layer's X^T X and Hessian blocks at a time. The whole-model stats
// file (calibrate --full-xtx) gives each linear's sizes; the pass must report the largest layer's
// sum as its peak and all layers' sum as what it avoided holding.
TEST(GptqLayers, HoldsOneLayerOfStatisticsAtATime) {
  GPTQ_FIXTURE(f);
  const std::string d = f.data_args(4, 32);
  const fs::path raw = f.tmp / "raw.st";
  f.run("calibrate " + quote(f.model.string()) + " " + d + " --hessian raw --full-xtx -o " +
        quote(raw.string()));
  const std::string out = f.quantize("q", "--weights-only --gptq " + d);
  EXPECT_NE(out.find("X^T X held at once"), std::string::npos) << out;
  const ActivationStats st = read_stats_file(raw);
  std::map<std::string, uint64_t> per_layer;  // "model.layers.N." -> bytes
  for (const auto& [m, x] : st.xtx) {
    const auto p = m.find('.', std::string("model.layers.").size());
    per_layer[m.substr(0, p + 1)] += (x.size() + st.hessian_blocks.at(m).size()) * 8;
  }
  ASSERT_EQ(per_layer.size(), 5u);
  uint64_t peak = 0, total = 0;
  for (const auto& [l, b] : per_layer) peak = std::max(peak, b), total += b;
  const auto pass = read_json(f.tmp / "q.json")["gptq_layer_pass"];
  EXPECT_EQ(pass["peak_stats_bytes"].get<uint64_t>(), peak);
  EXPECT_EQ(pass["total_stats_bytes"].get<uint64_t>(), total);
  EXPECT_LT(peak * 4, total);  // one layer of five similar ones
  EXPECT_EQ(pass["layers"].get<int>(), 5);
}

// Too few tokens for every expert: an expert no token reached has no X^T X; it keeps the codes
// it has without GPTQ (never zeroed weights), and the report says why, per tensor.
TEST(GptqLayers, ExpertsWithoutTokensKeepPlainCodesAndSaySo) {
  GPTQ_FIXTURE(f);
  f.quantize("g", "--weights-only --gptq " + f.data_args(1, 2));
  f.quantize("p", "--weights-only");
  auto g = Checkpoint::open(f.tmp / "g");
  auto p = Checkpoint::open(f.tmp / "p");
  size_t fallbacks = 0, applied = 0;
  const auto report = read_json(f.tmp / "g.json");
  for (const auto& t : report["tensors"]) {
    if (t["action"] != "quantize") continue;
    const std::string m = t["name"];
    if (t.value("gptq", false)) {
      ++applied;
      continue;
    }
    ++fallbacks;
    EXPECT_NE(t.value("gptq_fallback", "").find("no calibration token"), std::string::npos) << m;
    EXPECT_NE(m.find(".experts."), std::string::npos) << m;
    for (const std::string part : {".weight", ".weight_scale", ".weight_scale_2"})
      EXPECT_EQ(testing::bytes_of(*g, m + part), testing::bytes_of(*p, m + part)) << m + part;
  }
  EXPECT_GT(fallbacks, 0u) << "2 tokens, top-2 of 4 experts: some expert must be idle";
  EXPECT_GT(applied, 0u);
}

TEST(GptqLayers, SequentialKeepsTheFirstLayerAndChangesLaterOnes) {
  GPTQ_FIXTURE(f);
  const std::string d = f.data_args(4, 64);
  f.quantize("n", "--weights-only --gptq " + d);
  f.quantize("s", "--weights-only --gptq --gptq-sequential " + d);
  EXPECT_EQ(read_json(f.tmp / "s.json")["gptq_layer_pass"]["sequential"], true);
  auto n = Checkpoint::open(f.tmp / "n");
  auto s = Checkpoint::open(f.tmp / "s");
  size_t first = 0, later_differ = 0;
  for (const auto& name : n->tensor_names()) {
    if (!name.ends_with(".weight") || n->info(name).dtype != DType::U8) continue;
    if (name.starts_with("model.layers.0.")) {
      EXPECT_EQ(testing::bytes_of(*n, name), testing::bytes_of(*s, name)) << name;
      ++first;
    } else {
      later_differ += testing::bytes_of(*n, name) != testing::bytes_of(*s, name);
    }
  }
  EXPECT_EQ(first, 16u);
  EXPECT_GT(later_differ, 10u);
}

TEST(GptqLayers, SequentialLayerOneSeesTheQuantizedLayerZero) {
  GPTQ_FIXTURE(f);
  const std::string d = f.data_args(4, 64);
  f.quantize("s", "--weights-only --gptq --gptq-sequential " + d);
  auto src = Checkpoint::open(f.model);
  auto seq = Checkpoint::open(f.tmp / "s");
  // The hybrid: layer 0's quantized linears as the sequential run wrote them, the rest as source.
  std::vector<TensorSpec> specs;
  std::vector<std::pair<const Checkpoint*, std::string>> from;
  for (const auto& n : src->tensor_names()) {
    const Checkpoint* c = src.get();
    if (n.starts_with("model.layers.0.") && seq->has(n) && seq->info(n).dtype == DType::U8) c = seq.get();
    specs.push_back({n, c->info(n).dtype, c->info(n).shape});
    from.emplace_back(c, n);
    if (c == seq.get())
      for (const std::string part : {"_scale", "_scale_2"}) {
        specs.push_back({n + part, seq->info(n + part).dtype, seq->info(n + part).shape});
        from.emplace_back(seq.get(), n + part);
      }
  }
  ASSERT_EQ(specs.size(), src->tensor_names().size() + 2 * 16);
  const fs::path hybrid = f.tmp / "hybrid";
  fs::create_directories(hybrid);
  {
    CheckpointWriter w(hybrid, specs);
    for (const auto& [c, n] : from) w.write(n, c->bytes(n));
    w.finish();
  }
  fs::copy_file(f.model / "config.json", hybrid / "config.json");
  const fs::path st = f.tmp / "hybrid.st";
  f.run("calibrate " + quote(hybrid.string()) + " " + d + " --hessian raw --full-xtx -o " +
        quote(st.string()));
  {  // the hybrid's statistics, presented as the source's (quantize refuses another model's)
    ActivationStats h = read_stats_file(st);
    h.metadata["source_fingerprint"] = checkpoint_fingerprint(*src);
    write_stats_file(st, h);
  }
  f.quantize("r", "--weights-only --gptq --stats " + quote(st.string()));
  auto r = Checkpoint::open(f.tmp / "r");
  size_t compared = 0;
  for (const auto& n : seq->tensor_names())
    if (n.starts_with("model.layers.1.") && seq->info(n).dtype == DType::U8) {
      EXPECT_EQ(testing::bytes_of(*seq, n), testing::bytes_of(*r, n)) << n;
      ++compared;
    }
  EXPECT_EQ(compared, 16u);
}

TEST(GptqLayers, UsageErrors) {
  GPTQ_FIXTURE(f);
  const std::string d = f.data_args(2, 16);
  f.quantize("u1", "--weights-only --gptq-sequential", 2);
  f.quantize("u2", "--weights-only " + d, 2);                           // --data feeds nothing
  f.quantize("u3", "--weights-only --gptq --samples 3", 2);             // no --data
  const std::string out = f.quantize("u4", "--gptq " + d, 1);           // W4A4: no input scales
  EXPECT_NE(out.find("calibrate"), std::string::npos) << out;
  for (const std::string o : {"u1", "u2", "u3", "u4"}) EXPECT_FALSE(fs::exists(f.tmp / o)) << o;
}

}  // namespace
}  // namespace fp4kit
