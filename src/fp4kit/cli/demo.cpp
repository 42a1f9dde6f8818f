// fp4kit demo: no input needed. Builds a small deterministic Qwen3-MoE-style checkpoint with real
// tensor names, calibrates it, quantizes it (W4A4 in both output formats, and weights-only),
// checks every output against the source, evaluates the quality cost and prints the numbers.
// The calibrate and eval steps run this same binary with the command lines a user would type.
#include <fmt/core.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/quantize_job.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"

namespace fp4kit::cli {

namespace {
namespace fs = std::filesystem;

std::string self_exe() { return fs::read_symlink("/proc/self/exe").string(); }

std::string q(const fs::path& p) {
  std::string s = "'";
  for (char c : p.string()) s += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return s + "'";
}

// Runs `fp4kit ARGS` (this binary); returns stdout, throws on failure.
std::string run_self(const std::string& args, bool echo) {
  fmt::print("\n== fp4kit {}\n", args);
  std::fflush(stdout);
  const std::string cmd = q(self_exe()) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) throw Error("demo: cannot start " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  if (echo) fmt::print("{}", out);
  if (status != 0) {
    if (!echo) fmt::print("{}", out);
    throw Error("demo: step failed: fp4kit " + args);
  }
  return out;
}

// Deterministic token ids (uint16) for calibration and evaluation of the random demo model.
void write_token_file(const fs::path& path, size_t count, uint32_t vocab, uint64_t seed) {
  std::vector<uint16_t> ids(count);
  uint64_t x = seed;
  for (auto& id : ids) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<uint16_t>((x >> 33) % vocab);
  }
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 2));
  if (!f) throw Error("demo: cannot write " + path.string());
}

struct DemoArgs {
  std::string dir;
  bool keep = false;
};

fs::path make_work_dir(const std::string& requested) {
  if (!requested.empty()) {
    fs::path p(requested);
    if (fs::exists(p) && !fs::is_empty(p))
      throw Error(fmt::format("demo: {} exists and is not empty", p.string()));
    fs::create_directories(p);
    return p;
  }
  std::string tmpl = (fs::temp_directory_path() / "fp4kit-demo-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw Error("demo: cannot create a temporary directory");
  return tmpl;
}

int run_demo(const DemoArgs& a) {
  const fs::path work = make_work_dir(a.dir);
  const fs::path src = work / "qwen3-moe-demo-bf16";
  SyntheticMoeSpec spec;  // Qwen3-MoE names: 3 layers, 8 experts (top-2), hidden 256
  spec.layers = 3;
  spec.experts = 8;
  const uint64_t params = write_synthetic_moe(src, spec);
  fmt::print("== demo model: {} ({} parameters, {} layers, {} experts, bf16)\n", src.string(),
             params, spec.layers, spec.experts);

  const fs::path calib = work / "calib.u16", evalset = work / "eval.u16";
  write_token_file(calib, 16 * 128, static_cast<uint32_t>(spec.vocab), 1);
  write_token_file(evalset, 8 * 128, static_cast<uint32_t>(spec.vocab), 2);
  const fs::path stats = work / "stats.safetensors";
  run_self(fmt::format("calibrate {} --data {} --samples 16 --seq-len 128 -o {}", q(src), q(calib),
                       q(stats)),
           true);

  struct Run {
    const char* format;
    const char* dir;
    bool weights_only;
  };
  const Run runs[] = {{"modelopt", "nvfp4-w4a4-modelopt", false},
                      {"compressed-tensors", "nvfp4-w4a4-ct", false},
                      {"modelopt", "nvfp4-w4a16-modelopt", true}};
  for (const auto& r : runs) {
    QuantizeArgs qa;
    qa.source = src.string();
    qa.out = (work / r.dir).string();
    qa.format = r.format;
    qa.weights_only = r.weights_only;
    if (!r.weights_only) qa.stats = stats.string();
    qa.verify = "full";
    qa.report = (work / (std::string(r.dir) + "-report.json")).string();
    fmt::print("\n== fp4kit quantize {} {} --format {} {} --verify full\n", q(src), q(qa.out),
               qa.format, r.weights_only ? "--weights-only" : "--stats " + q(stats));
    std::fflush(stdout);
    const int rc = run_quantize_job(qa);
    if (rc != 0) return rc;
  }

  // Quality cost, measured by running both models over the same tokens.
  // Random weights and random tokens: perplexity is high by construction; KL divergence and
  // top-1 agreement against the source are the numbers that show the cost of quantization.
  std::string table =
      "\n== quality of the demo model (random weights, 1,024 random tokens; read KLD and top-1)\n";
  table += fmt::format("  {:<22} {:>12} {:>12} {:>10}\n", "checkpoint", "perplexity", "mean KLD",
                       "same top-1");
  for (const auto& r : runs) {
    if (std::string(r.format) != "modelopt") continue;
    const std::string out = run_self(fmt::format("eval {} --base {} --data {} --ctx 128 --json",
                                                 q(work / r.dir), q(src), q(evalset)),
                                     false);
    const auto j = nlohmann::json::parse(out.substr(out.find('{')));
    table += fmt::format("  {:<22} {:>12.4f} {:>12.6f} {:>9.2f}%\n",
                         r.weights_only ? "NVFP4 W4A16" : "NVFP4 W4A4",
                         j.at("ppl").at("value").get<double>(),
                         j.at("kl_divergence").at("kld").at("mean").at("value").get<double>(),
                         100.0 * j.at("kl_divergence").at("same_top_p").at("value").get<double>());
    if (r.weights_only) continue;
    table = table.insert(table.find("  NVFP4"),
                         fmt::format("  {:<22} {:>12.4f} {:>12} {:>10}\n", "BF16 (source)",
                                     j.at("ppl_base").at("value").get<double>(), "0", "100%"));
  }
  fmt::print("{}", table);
  fmt::print("\n== demo finished: outputs in {}\n", work.string());
  if (a.dir.empty() && !a.keep) {
    fs::remove_all(work);
    fmt::print("   (temporary directory removed; pass --dir DIR or --keep to keep it)\n");
  }
  return 0;
}
}  // namespace

Command add_demo(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  auto* sub = app.add_subcommand(
      "demo", "Build a small Qwen3-MoE-style checkpoint, quantize it both ways, check it");
  sub->add_option("--dir", args->dir, "work directory (default: a temporary one)");
  sub->add_flag("--keep", args->keep, "keep the temporary directory");
  return {sub, [args] { return run_demo(*args); }};
}

}  // namespace fp4kit::cli
