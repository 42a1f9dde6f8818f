// `fp4kit demo` needs no input: it quantizes the stories260K model it carries and prints one table
// and the generated texts. Checked against shared/data (README reference values, the documented
// greedy text, TinyStories' words) and against `fp4kit eval` run separately on its outputs.
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "fp4kit/text/calibration_data.hpp"
#include "fp4kit/text/tokenizer.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

namespace fs = std::filesystem;

const char* const kNvfp4Rows[] = {"NVFP4 W4A16 (weights only)", "NVFP4 W4A4 (ModelOpt)",
                                  "NVFP4 W4A4 (compressed-t.)"};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

struct TableRow {
  double ppl = 0;
  std::string kld, top1;
  int greedy_same = 0, greedy_len = 0;
};

// "  <label>   <n> KiB   <ppl>   <kld>   <top1>   <same>/<len>"
std::map<std::string, TableRow> parse_table(const std::string& out) {
  std::map<std::string, TableRow> rows;
  const std::regex re(R"(  (\S.*?)\s+\d+ KiB\s+([0-9.]+)\s+(\S+)\s+(\S+)\s+(\d+)/(\d+))");
  std::istringstream in(out);
  std::smatch m;
  for (std::string line; std::getline(in, line);)
    if (std::regex_match(line, m, re))
      rows[m[1]] = {std::stod(m[2]), m[3], m[4], std::stoi(m[5]), std::stoi(m[6])};
  return rows;
}

// The generated text printed under "  <label>" (lines indented by 4), joined by spaces.
std::string continuation_text(const std::string& out, const std::string& label) {
  const auto at = out.find("\nGreedy continuations of");
  if (at == std::string::npos) return {};
  std::istringstream in(out.substr(at));
  std::string line, text;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line == "  " + label) {
      inside = true;
    } else if (inside && line.rfind("    ", 0) == 0) {
      text += (text.empty() ? "" : " ") + line.substr(4);
    } else if (inside) {
      break;
    }
  }
  return text;
}

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (char c : text + " ") {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!w.empty()) {
      words.push_back(w);
      w.clear();
    }
  }
  return words;
}

nlohmann::json eval_json(const std::string& args) {
  const auto r = testing::run_command(testing::fp4kit_binary() + " eval " + args + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output.substr(r.output.find('{')));
}

TEST(Demo, QuantizesTheRealModelAndReportsWhatItCosts) {
  FP4KIT_REQUIRE_SHARED(expected_path, "expected/stories260k.json");
  FP4KIT_REQUIRE_SHARED(val_text, "text/tinystories_val.txt");
  const auto expected = nlohmann::json::parse(read_text(expected_path));
  testing::TempDir tmp;
  const fs::path demo = tmp / "demo";
  const auto r = testing::run_command(testing::fp4kit_binary() + " demo --dir " +
                                      testing::quote(demo.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* d : {"nvfp4-w4a16", "nvfp4-w4a4", "nvfp4-w4a4-ct"}) {
    EXPECT_TRUE(fs::exists(demo / d / "config.json")) << d;
    EXPECT_FALSE(fs::exists(demo / (std::string(d) + ".partial"))) << d;
    // The model's licence travels with every checkpoint derived from it.
    EXPECT_TRUE(fs::exists(demo / d / "LICENSE-llama2.c")) << d;
  }
  EXPECT_EQ(r.output.find("\n[10/14]"), r.output.rfind("\n[10/14]")) << r.output;
  EXPECT_NE(r.output.find("\n[14/14] greedy"), std::string::npos) << r.output;
  // Quiet by default: no per-tensor lines of quantize or verify.
  EXPECT_EQ(r.output.find("rel-RMSE"), std::string::npos) << r.output;

  const auto rows = parse_table(r.output);
  ASSERT_EQ(rows.size(), 5u) << r.output;
  // BF16 perplexity on the first 30k tokens = the shared data README's value (fp32 compute),
  // for the dense model and for the split-expert MoE (the same function).
  const auto& ppl = expected.at("perplexity");
  const double dense_ref = ppl.at("bf16_checkpoint_fp32_compute_30k").at("ppl");
  const double moe_ref = ppl.at("moe_fp32_compute_30k_ppl_transformers").at("stories260k-mixtral");
  EXPECT_NEAR(rows.at("BF16 dense (stories260K)").ppl, dense_ref, 1.5e-4);
  EXPECT_NEAR(rows.at("BF16 MoE, 4 split experts").ppl, moe_ref, 1.5e-4);
  EXPECT_EQ(rows.at("BF16 MoE, 4 split experts").kld, "0.000000");
  EXPECT_EQ(rows.at("BF16 MoE, 4 split experts").top1, "100.00%");
  for (const char* label : kNvfp4Rows) {
    const auto& row = rows.at(label);
    EXPECT_GT(row.ppl, dense_ref) << label;  // 4 bits cost something on a 260K model...
    EXPECT_LT(row.ppl, 2 * dense_ref) << label;  // ...but the model still works
    EXPECT_GT(std::stod(row.kld), 0.0) << label;
    EXPECT_LT(std::stod(row.top1), 100.0) << label;
    EXPECT_GT(std::stod(row.top1), 50.0) << label;
  }

  // BF16's greedy text is the documented stories260K text (README: identical for 185 tokens).
  std::string doc = expected.at("greedy").at("doc_text");
  for (size_t p; (p = doc.find('\n')) != std::string::npos;) doc.replace(p, 1, " / ");
  const auto bf16 = continuation_text(r.output, "BF16 dense (stories260K)");
  ASSERT_GT(bf16.size(), 100u) << r.output;
  EXPECT_EQ(bf16, doc.substr(0, bf16.size()));
  EXPECT_EQ(rows.at("BF16 dense (stories260K)").greedy_len, 64);
  // NVFP4 continuations are real TinyStories text: every word occurs in the validation set.
  std::set<std::string> vocabulary;
  for (auto& w : words_of(read_text(val_text))) vocabulary.insert(std::move(w));
  for (const char* label : kNvfp4Rows) {
    const auto text = continuation_text(r.output, label);
    EXPECT_EQ(text.rfind("Once upon a time", 0), 0u) << label << ": " << text;
    const auto words = words_of(text);
    EXPECT_GE(words.size(), 30u) << label << ": " << text;
    for (const auto& w : words) EXPECT_TRUE(vocabulary.count(w)) << label << ": " << w;
    EXPECT_EQ(text.find("\xEF\xBF\xBD"), std::string::npos) << label << ": " << text;
    const std::set<std::string> distinct(words.begin(), words.end());
    EXPECT_GE(distinct.size(), 15u) << label << ": " << text;  // not a loop of one phrase
  }

  // The table agrees with `fp4kit eval` run separately against the dense BF16 model.
  const std::string common = " --base " + testing::quote((demo / "stories260k-llama").string()) +
                             " --data " + testing::quote((demo / "tinystories-eval.txt").string()) +
                             " --ctx 256 --tokens 30000";
  for (const auto& [dir, label] : {std::pair{"nvfp4-w4a4", kNvfp4Rows[1]},
                                   std::pair{"nvfp4-w4a16", kNvfp4Rows[0]}}) {
    const auto j = eval_json(testing::quote((demo / dir).string()) + common);
    const auto& row = rows.at(label);
    EXPECT_NEAR(j.at("ppl").at("value").get<double>(), row.ppl, 5.1e-5) << label;
    EXPECT_NEAR(j.at("kl_divergence").at("kld").at("mean").at("value").get<double>(),
                std::stod(row.kld), 5.1e-7) << label;
    EXPECT_NEAR(100 * j.at("kl_divergence").at("same_top_p").at("value").get<double>(),
                std::stod(row.top1), 5.1e-3) << label;
  }
}

TEST(Demo, CarriesTheSharedDataFilesAndTheirTokens) {
  FP4KIT_REQUIRE_SHARED(data, "models/stories260k-llama2c/stories260K.bin");
  FP4KIT_REQUIRE_SHARED(tok, "models/stories260k-llama/tokenizer.json");
  FP4KIT_REQUIRE_SHARED(u16, "text/tinystories_val.stories260k.u16");
  const fs::path carried = fs::path(FP4KIT_SOURCE_DIR) / "data" / "demo";
  EXPECT_TRUE(read_text(carried / "stories260K.bin") == read_text(data));
  EXPECT_TRUE(read_text(carried / "tokenizer.json") == read_text(tok));
  // The carried text tokenizes to the start of the shared token stream (eval text, then calib
  // text: consecutive blocks of the validation split), so the demo's PPL follows the README.
  const auto tokenizer = text::Tokenizer::load(carried / "tokenizer.json");
  const auto stream = text::read_token_file(u16, 2);
  text::CalibrationOptions o;
  auto ids = text::load_token_stream(carried / "tinystories-eval.txt", &tokenizer, o);
  EXPECT_EQ(ids.size(), 30080u);
  const auto calib = text::load_token_stream(carried / "tinystories-calib.txt", &tokenizer, o);
  ids.insert(ids.end(), calib.begin(), calib.end());
  ASSERT_LE(ids.size(), stream.size());
  EXPECT_TRUE(std::equal(ids.begin(), ids.end(), stream.begin()));
}

TEST(Demo, LeavesNothingBehindWhenAStepFails) {
  testing::TempDir tmp;
  fs::create_directories(tmp / "t");
  // A file-size limit below the saved BF16 log-probabilities (61 MB) fails step 10.
  const auto r = testing::run_command("ulimit -f 20000 && TMPDIR=" +
                                      testing::quote((tmp / "t").string()) + " " +
                                      testing::fp4kit_binary() + " demo");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("step 10 failed"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_empty(tmp / "t")) << r.output;
  // --dir never writes into a directory holding something already.
  std::ofstream(tmp / "t" / "mine") << "x";
  const auto d = testing::run_command(testing::fp4kit_binary() + " demo --dir " +
                                      testing::quote((tmp / "t").string()));
  EXPECT_EQ(d.exit_code, 1) << d.output;
  EXPECT_NE(d.output.find("exists and is not an empty directory"), std::string::npos) << d.output;
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp / "t"), fs::directory_iterator()), 1);
}

TEST(Demo, InterruptRemovesTheTemporaryDirectory) {
  testing::TempDir tmp;
  fs::create_directories(tmp / "t");
  const std::string t = testing::quote((tmp / "t").string());
  // Ctrl-C reaches the demo while a step runs (once calibration has written its file).
  const auto r = testing::run_command(
      "TMPDIR=" + t + " " + testing::fp4kit_binary() + " demo > " + t + "/../log 2>&1 & pid=$!; " +
      "i=0; while [ ! -e " + t + "/fp4kit-demo-*/stats.safetensors ] && [ $i -lt 600 ]; do " +
      "sleep 0.1; i=$((i+1)); done; kill -INT $pid; wait $pid; echo rc=$?");
  EXPECT_NE(r.output.find("rc=130"), std::string::npos)
      << r.output << read_text(tmp / "log");
  EXPECT_NE(read_text(tmp / "log").find("interrupted"), std::string::npos) << read_text(tmp / "log");
  EXPECT_TRUE(fs::is_empty(tmp / "t"));
}

}  // namespace
}  // namespace fp4kit
