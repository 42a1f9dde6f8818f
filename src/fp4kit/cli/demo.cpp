// fp4kit demo: no input needed. Builds Hugging Face checkpoints of a real trained model
// (Karpathy's stories260K, carried inside the binary: demo_assets.hpp) and runs the path a user
// runs, with the command lines a user would type: plan (dry run), calibrate on text, quantize
// (weights-only and W4A4, both output formats), verify against the source, eval; then greedy
// continuations of a prompt by the BF16 model and by each NVFP4 checkpoint, and one table of
// perplexity, KL divergence and top-1 agreement.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <vector>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/demo_assets.hpp"
#include "fp4kit/cli/scratch_dir.hpp"
#include "fp4kit/cli/subprocess.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/llama2c_checkpoint.hpp"
#include "fp4kit/text/tokenizer.hpp"

namespace fp4kit::cli {

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kDense = "stories260k-llama";
constexpr const char* kMoe = "stories260k-moe";
constexpr const char* kPrompt = "Once upon a time";
constexpr int kSteps = 14;  // numbered progress lines

struct DemoArgs {
  std::string dir;
  bool keep = false, verbose = false;
  size_t generate = 64;  // greedy tokens per checkpoint
};

// One quantized output of the demo.
struct Output {
  const char* dir;
  const char* label;
  std::vector<std::string> quantize_args;
};

void write_file(const fs::path& p, std::span<const uint8_t> bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw Error("demo: cannot write " + p.string());
}

std::string indent(const std::string& text, const std::string& pad) {
  std::string out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out += pad + line + "\n";
  return out;
}

// The line of `output` that starts (after spaces) with `key`, trimmed; empty when absent.
std::string line_starting(const std::string& output, const std::string& key) {
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    const auto b = line.find_first_not_of(' ');
    if (b != std::string::npos && line.compare(b, key.size(), key) == 0) return line.substr(b);
  }
  return {};
}

uint64_t weight_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") n += e.file_size();
  return n;
}

// Numbered steps: "[ 3/14] fp4kit calibrate ...  (1.3 s)  note". Quiet by default; --verbose
// prints each command's own output (per-tensor lines) under its step.
class Steps {
 public:
  Steps(fs::path work, bool verbose) : work_(std::move(work)), verbose_(verbose) {}

  void begin(const std::string& what) {
    fmt::print("[{:>2}/{}] {}", ++n_, kSteps, what);
    std::fflush(stdout);
    t0_ = Clock::now();
  }
  void end(const std::string& note = {}) {
    const double s = std::chrono::duration<double>(Clock::now() - t0_).count();
    fmt::print("  ({:.1f} s){}\n", s, note.empty() ? "" : "  " + note);
  }

  // Runs `fp4kit ARGS` (this binary) in the work directory, as a user would type it.
  std::string run(const std::vector<std::string>& args) {
    std::string cmd = "fp4kit";
    for (const auto& a : args) cmd += " " + a;
    begin(cmd);
    const auto r = run_child(self_executable(), args, work_);
    if (verbose_ || r.exit_code != 0) fmt::print("\n{}", indent(r.output, "        "));
    if (r.exit_code != 0)
      throw Error(fmt::format("demo: step {} failed (exit code {}): {}", n_, r.exit_code, cmd));
    return r.output;
  }

 private:
  fs::path work_;
  bool verbose_;
  int n_ = 0;
  Clock::time_point t0_;
};

nlohmann::json parse_eval_json(const std::string& out) {
  const auto b = out.find('{');
  if (b == std::string::npos) throw Error("demo: fp4kit eval printed no JSON:\n" + out);
  return nlohmann::json::parse(out.substr(b));
}

struct Row {
  std::string label;
  uint64_t bytes = 0;
  double ppl = 0;
  std::optional<double> kld, top1;
  std::vector<int32_t> continuation;
};

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// Greedy ids after the prompt, cut after the first end-of-story id (run.c stops at BOS).
std::vector<int32_t> continuation(const fs::path& dir, const std::vector<int32_t>& prompt,
                                  size_t tokens, const std::vector<int32_t>& stop) {
  auto ckpt = Checkpoint::open(dir);
  engine::Engine eng(*ckpt);
  auto ids = engine::greedy_generate(eng, prompt, tokens);
  for (size_t i = 0; i < ids.size(); ++i)
    if (std::find(stop.begin(), stop.end(), ids[i]) != stop.end()) {
      ids.resize(i + 1);
      break;
    }
  return ids;
}

// Word-wraps `text` (newlines kept as " / ") to `width` columns after a `pad` indent.
std::string wrap(std::string text, size_t width, const std::string& pad) {
  for (size_t p; (p = text.find('\n')) != std::string::npos;) text.replace(p, 1, " / ");
  std::string out, line;
  std::istringstream in(text);
  for (std::string w; in >> w;) {
    if (!line.empty() && line.size() + 1 + w.size() > width) {
      out += line + "\n" + pad;
      line.clear();
    }
    line += (line.empty() ? "" : " ") + w;
  }
  return out + line;
}

int run_demo(const DemoArgs& a) {
  const auto t_start = Clock::now();
  ScratchDir scratch(a.dir, "fp4kit-demo");
  const fs::path& work = scratch.path();
  fmt::print("fp4kit demo: NVFP4 on stories260K, a real Llama (260K parameters) trained on "
             "TinyStories\n(Karpathy's llama2.c, MIT licence), carried inside this binary. "
             "Work directory: {}\n\n", work.string());
  Steps steps(work, a.verbose);

  // 1. The checkpoints, built from the llama2.c file as data/demo/README.md says.
  steps.begin(fmt::format("build {}/ (dense) and {}/ (Mixtral, 4 split experts, same function)",
                          kDense, kMoe));
  for (const char* f : {"tinystories-eval.txt", "tinystories-calib.txt"})
    write_file(work / f, demo_asset(f));
  const auto model = read_llama2c(demo_asset("stories260K.bin"), "stories260K.bin (built in)");
  const uint64_t dense_params = write_llama2c_as_llama(model, work / kDense);
  const uint64_t moe_params = write_llama2c_as_mixtral(model, work / kMoe, 4);
  // The tokenizer, and the licence and provenance that every derived checkpoint carries
  // (quantize copies them into its outputs).
  for (const char* d : {kDense, kMoe})
    for (const char* f : {"tokenizer.json", "LICENSE-llama2.c", "README.md"})
      write_file(work / d / f, demo_asset(f));
  steps.end(fmt::format("{} / {} bf16 parameters", dense_params, moe_params));

  // 2. The plan: what happens to every tensor, before any byte is written.
  const std::string plan =
      steps.run({"quantize", kMoe, "nvfp4-w4a16", "--weights-only", "--dry-run"});
  steps.end();
  if (!a.verbose) {
    const auto b = plan.find("by action and reason:");
    if (b != std::string::npos) fmt::print("{}", indent(plan.substr(b), "        "));
  }

  // 3. Activation statistics for W4A4, on text the evaluation never sees.
  const std::string calib = steps.run({"calibrate", kMoe, "--data", "tinystories-calib.txt",
                                       "--samples", "32", "--seq-len", "256", "-o",
                                       "stats.safetensors"});
  steps.end(line_starting(calib, "linears with statistics"));

  // 4-6. Quantize; 7-9. check each output against its source like a loader would.
  const std::vector<Output> outputs = {
      {"nvfp4-w4a16", "NVFP4 W4A16 (weights only)", {"--weights-only"}},
      {"nvfp4-w4a4", "NVFP4 W4A4 (ModelOpt)", {"--stats", "stats.safetensors"}},
      {"nvfp4-w4a4-ct", "NVFP4 W4A4 (compressed-t.)",
       {"--stats", "stats.safetensors", "--format", "compressed-tensors"}},
  };
  for (const auto& o : outputs) {
    std::vector<std::string> args = {"quantize", kMoe, o.dir};
    args.insert(args.end(), o.quantize_args.begin(), o.quantize_args.end());
    const std::string out = steps.run(args);
    steps.end(line_starting(out, "bytes:"));
  }
  for (const auto& o : outputs) {
    const std::string out = steps.run({"verify", o.dir, "--source", kMoe});
    steps.end(line_starting(out, "result:"));
  }

  // 10-13. Perplexity on the first 30,000 tokens of the eval text (shared/data README's
  // protocol: 256-token windows), KL divergence and top-1 agreement against the dense BF16
  // model, whose log-probabilities are saved once and reused.
  std::vector<Row> rows;
  {
    const auto j = parse_eval_json(steps.run(
        {"eval", kMoe, "--base", kDense, "--data", "tinystories-eval.txt", "--ctx", "256",
         "--tokens", "30000", "--save-base", "bf16.logprobs", "--json"}));
    rows.push_back({"BF16 dense (stories260K)", weight_bytes(work / kDense),
                    j.at("ppl_base").at("value").get<double>(), std::nullopt, std::nullopt, {}});
    const auto& k = j.at("kl_divergence");
    rows.push_back({"BF16 MoE, 4 split experts", weight_bytes(work / kMoe),
                    j.at("ppl").at("value").get<double>(),
                    k.at("kld").at("mean").at("value").get<double>(),
                    k.at("same_top_p").at("value").get<double>(), {}});
    steps.end(fmt::format("PPL {:.4f} (dense), {:.4f} (MoE)", rows[0].ppl, rows[1].ppl));
  }
  for (const auto& o : outputs) {
    const auto j = parse_eval_json(
        steps.run({"eval", o.dir, "--base-logits", "bf16.logprobs", "--json"}));
    const auto& k = j.at("kl_divergence");
    rows.push_back({o.label, weight_bytes(work / o.dir), j.at("ppl").at("value").get<double>(),
                    k.at("kld").at("mean").at("value").get<double>(),
                    k.at("same_top_p").at("value").get<double>(), {}});
    steps.end(fmt::format("PPL {:.4f}", rows.back().ppl));
  }

  // 14. Greedy continuations (engine API: the CLI has no generate command).
  steps.begin(fmt::format("greedy continuations of \"{}\" ({} tokens) by all {} checkpoints",
                          kPrompt, a.generate, rows.size()));
  const auto tok = text::Tokenizer::load(work / kMoe);
  const auto prompt = tok.encode(kPrompt);
  std::vector<fs::path> dirs = {work / kDense, work / kMoe};
  for (const auto& o : outputs) dirs.push_back(work / o.dir);
  for (size_t i = 0; i < rows.size(); ++i)
    rows[i].continuation = continuation(dirs[i], prompt, a.generate, tok.eos_ids());
  steps.end();

  const auto& ref = rows[0].continuation;
  fmt::print("\nWhat NVFP4 costs: perplexity on 30,000 tokens of TinyStories validation text; KL "
             "divergence and top-1\nagreement per token against the BF16 model; greedy: "
             "generated tokens identical to BF16's until the first difference.\n");
  fmt::print("  {:<28} {:>9} {:>8} {:>10} {:>11} {:>8}\n", "checkpoint", "on disk", "PPL",
             "mean KLD", "same top-1", "greedy");
  for (const auto& r : rows)
    fmt::print("  {:<28} {:>5.0f} KiB {:>8.4f} {:>10} {:>11} {:>4}/{}\n", r.label,
               static_cast<double>(r.bytes) / 1024.0, r.ppl,
               // KLD of an identical function is 0 up to rounding, which can be just below 0.
               r.kld ? fmt::format("{:.6f}", std::abs(*r.kld) < 5e-7 ? 0.0 : *r.kld) : "-",
               r.top1 ? fmt::format("{:.2f}%", 100.0 * *r.top1) : "-",
               common_prefix(r.continuation, ref), r.continuation.size());

  fmt::print("\nGreedy continuations of \"{}\":\n", kPrompt);
  for (const auto& r : rows) {
    std::vector<int32_t> ids = prompt;
    ids.insert(ids.end(), r.continuation.begin(), r.continuation.end());
    fmt::print("  {}\n    {}\n", r.label, wrap(tok.decode(ids, true), 96, "    "));
  }

  const double total = std::chrono::duration<double>(Clock::now() - t_start).count();
  if (a.dir.empty() && !a.keep) {
    fmt::print("\ndemo finished in {:.1f} s; temporary directory removed (--keep or --dir DIR "
               "keeps the checkpoints)\n", total);
  } else {
    scratch.keep();
    fmt::print("\ndemo finished in {:.1f} s; checkpoints in {}\n", total, work.string());
  }
  return 0;
}
}  // namespace

Command add_demo(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  auto* sub = app.add_subcommand(
      "demo", "Quantize a real trained model (stories260K, built in) to NVFP4 and show what it "
              "costs: plan, calibrate, quantize, verify, eval, generated text");
  sub->add_option("--dir", args->dir, "work directory, kept (default: a temporary one, removed)");
  sub->add_flag("--keep", args->keep, "keep the temporary directory");
  sub->add_flag("-v,--verbose", args->verbose, "print every command's own output");
  sub->add_option("--generate", args->generate, "greedy tokens generated per checkpoint (default 64)")
      ->check(CLI::Range(1, 400));
  return {sub, [args] { return run_demo(*args); }};
}

}  // namespace fp4kit::cli
