// `fp4kit eval` end to end on the real stories260K checkpoints.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "fp4kit/engine/evaluate.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "fp4kit/text/calibration_data.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "support/file_bytes.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::quote;
using testing::run_command;

std::string read_bytes(const std::filesystem::path& p) { return testing::file_bytes(p); }

std::unique_ptr<text::Tokenizer> tokenizer(const std::filesystem::path& dir) {
  return std::make_unique<text::Tokenizer>(text::Tokenizer::load(dir));
}

nlohmann::json run_json(const std::string& args) {
  const auto r = run_command(testing::fp4kit_binary() + " eval " + args + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output.substr(r.output.find('{')));
}

TEST(EvalCli, PerplexityKldAgainstItselfAndSavedBase) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(routed, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  const std::string common = " --data " + quote(data.string()) + " --ctx 256 --chunks 6";
  const auto self = run_json(quote(dense.string()) + " --base " + quote(dense.string()) + common);
  EXPECT_EQ(self["tokens_scored"], 6 * 256);
  EXPECT_EQ(self["kl_divergence"]["kld"]["mean"]["value"].get<double>(), 0.0);
  EXPECT_EQ(self["kl_divergence"]["same_top_p"]["value"].get<double>(), 1.0);

  const auto base_file = tmp / "base.bin";
  const auto a = run_json(quote(routed.string()) + " --base " + quote(dense.string()) + common +
                          " --save-base " + quote(base_file.string()));
  const auto b = run_json(quote(routed.string()) + " --base-logits " + quote(base_file.string()));
  EXPECT_GT(a["kl_divergence"]["kld"]["mean"]["value"].get<double>(), 0.001);
  EXPECT_LT(a["kl_divergence"]["same_top_p"]["value"].get<double>(), 1.0);
  EXPECT_EQ(a["kl_divergence"], b["kl_divergence"]);
  EXPECT_EQ(a["ppl"], b["ppl"]);
}

// Without --chunks/--tokens the windows are read and encoded as they are evaluated (the token
// stream is never held whole): the numbers, the saved base log-probs and the dumped logits are those
// of the whole stream held in memory (engine::evaluate over ppl_windows, the path eval took before),
// with a short last window, a text file through the tokenizer, and --save-base read back.
TEST(EvalCli, StreamedWindowsGiveTheNumbersOfTheWholeStream) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(routed, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(ids, "text/tinystories_val.stories260k.u16");
  FP4KIT_REQUIRE_SHARED(txt, "text/tinystories_val.txt");
  testing::TempDir tmp;
  // 3000 ids: 46 windows of 64 + 1 and a last one of 57 tokens; the text's first 20 documents.
  std::ifstream in(ids, std::ios::binary);
  std::string head(6000, '\0');
  in.read(head.data(), 6000);
  std::ofstream(tmp / "head.u16", std::ios::binary) << head;
  std::ifstream tin(txt, std::ios::binary);
  std::string text, line;
  for (int empty = 0; empty < 20 && std::getline(tin, line);) {
    empty += line.empty();
    text += line + "\n";
  }
  std::ofstream(tmp / "head.txt", std::ios::binary) << text;
  auto quant = Checkpoint::open(routed), base = Checkpoint::open(dense);
  set_thread_count(1);
  for (const char* data : {"head.u16", "head.txt"}) {
    SCOPED_TRACE(data);
    const auto path = tmp / data;
    const auto cli = run_json(quote(routed.string()) + " --base " + quote(dense.string()) + " --data " +
                              quote(path.string()) + " --ctx 64 --threads 1 --save-base " +
                              quote((tmp / "saved-cli.bin").string()) + " --dump-logits " +
                              quote((tmp / "dump-cli.bin").string()));
    engine::EvalOptions o;
    o.ctx = 64;
    o.save_base = tmp / "saved-lib.bin";
    o.dump_logits = tmp / "dump-lib.bin";
    const auto stream = text::load_token_stream(path, path.extension() == ".txt" ? &*tokenizer(dense) : nullptr, {});
    const engine::EvalResult r = engine::evaluate(*quant, base.get(), stream, o);
    EXPECT_EQ(cli["windows"].get<size_t>(), r.windows);
    EXPECT_EQ(cli["tokens_scored"].get<size_t>(), stream.size() - 1);  // windows overlap by one
    EXPECT_EQ(cli["ppl"]["value"].get<double>(), r.quant.ppl);
    EXPECT_EQ(cli["ppl_base"]["value"].get<double>(), r.base->ppl);
    EXPECT_EQ(cli["kl_divergence"], nlohmann::json::parse(engine::kld_summary_json(*r.kld).dump()));
    EXPECT_EQ(read_bytes(tmp / "saved-cli.bin"), read_bytes(tmp / "saved-lib.bin"));
    EXPECT_EQ(read_bytes(tmp / "dump-cli.bin"), read_bytes(tmp / "dump-lib.bin"));
    EXPECT_GT(read_bytes(tmp / "dump-cli.bin").size(), stream.size() * 512 * 4 / 2);
    // The saved file carries the windows: --base-logits gives the same comparison.
    const auto again = run_json(quote(routed.string()) + " --base-logits " + quote((tmp / "saved-cli.bin").string()) +
                                " --threads 1");
    EXPECT_EQ(again["kl_divergence"], cli["kl_divergence"]);
  }
}

TEST(EvalCli, TextSummaryHasTheLlamaCppLayout) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(routed, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto r = run_command(testing::fp4kit_binary() + " eval " + quote(routed.string()) +
                             " --base " + quote(dense.string()) + " --data " +
                             quote(data.string()) + " --ctx 256 --chunks 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* line :
       {"====== Perplexity statistics ======", "Mean PPL(Q)                   : ",
        "====== KL divergence statistics ======", "Mean    KLD: ", "99.0%   KLD: ",
        "90.0%   KLD: ", "Median  KLD: ", "RMS Δp    : ", "Same top p: ", "Final estimate: PPL = "})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
}

TEST(EvalCli, PerplexityOnlyWithoutBaseAndErrors) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto j = run_json(quote(dense.string()) + " --data " + quote(data.string()) +
                          " --ctx 256 --tokens 2000");
  EXPECT_FALSE(j.contains("kl_divergence"));
  EXPECT_EQ(j["tokens_scored"], 1999);
  EXPECT_GT(j["ppl"]["value"].get<double>(), 1.0);
  const auto missing = run_command(testing::fp4kit_binary() + " eval " + quote(dense.string()));
  EXPECT_EQ(missing.exit_code, 2) << "a missing --data is wrong usage\n" << missing.output;
  const auto bad = run_command(testing::fp4kit_binary() + " eval " + quote(dense.string()) +
                               " --data /nonexistent/file.u16");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
}

// NVFP4 checkpoints from `fp4kit quantize` in both formats (A: ModelOpt weight_scale_2 and
// input_scale; B: compressed-tensors reciprocal globals) are decoded as loaders do: both formats
// hold the same bytes, so they evaluate to the same numbers up to the one rounding of 1/s2; W4A4
// (activation simulation) costs more than weight-only.
TEST(EvalCli, Nvfp4FormatsAAndBAgreeAndW4A4IsSimulated) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  const std::string bin = testing::fp4kit_binary();
  const auto stats = tmp / "stats.safetensors";
  ASSERT_EQ(run_command(bin + " calibrate " + quote(dense.string()) + " --data " +
                        quote(data.string()) + " --samples 8 --seq-len 256 -o " +
                        quote(stats.string())).exit_code, 0);
  std::map<std::string, nlohmann::json> r;
  for (const char* fmt : {"modelopt", "compressed-tensors"})
    for (const char* kind : {"w4a16", "w4a4"}) {
      const auto out = tmp / (std::string(fmt) + "-" + kind);
      const std::string extra = std::string(kind) == "w4a16" ? " --weights-only"
                                                             : " --stats " + quote(stats.string());
      const auto q = run_command(bin + " quantize " + quote(dense.string()) + " " +
                                 quote(out.string()) + " --format " + fmt + extra);
      ASSERT_EQ(q.exit_code, 0) << q.output;
      r[std::string(fmt) + "-" + kind] =
          run_json(quote(out.string()) + " --base " + quote(dense.string()) + " --data " +
                   quote(data.string()) + " --ctx 256 --chunks 8");
    }
  for (const char* kind : {"w4a16", "w4a4"}) {
    const auto& a = r[std::string("modelopt-") + kind];
    const auto& b = r[std::string("compressed-tensors-") + kind];
    const double pa = a["ppl"]["value"], pb = b["ppl"]["value"];
    EXPECT_NEAR(pa, pb, 1e-4 * pa) << kind;
    EXPECT_EQ(a["activation_quantization"], std::string(kind) == "w4a4");
    EXPECT_EQ(b["activation_quantization"], std::string(kind) == "w4a4");
  }
  const double k16 = r["modelopt-w4a16"]["kl_divergence"]["kld"]["mean"]["value"];
  const double k4 = r["modelopt-w4a4"]["kl_divergence"]["kld"]["mean"]["value"];
  EXPECT_GT(k16, 0.01);  // NVFP4 weights on a 260K model: clearly visible
  EXPECT_GT(k4, k16);    // quantized activations on top
}

}  // namespace
}  // namespace fp4kit
