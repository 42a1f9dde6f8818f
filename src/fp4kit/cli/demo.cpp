// fp4kit demo: no input needed. Builds a small deterministic Qwen3-MoE-style checkpoint with real
// tensor names, quantizes it in both output formats, checks the outputs and prints the summary.
#include <fmt/core.h>

#include <cstdlib>
#include <filesystem>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/quantize_job.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"

namespace fp4kit::cli {

namespace {
namespace fs = std::filesystem;

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

  struct Run {
    const char* format;
    const char* dir;
  };
  const Run runs[] = {{"modelopt", "nvfp4-modelopt"}, {"compressed-tensors", "nvfp4-ct"}};
  for (const auto& r : runs) {
    QuantizeArgs q;
    q.source = src.string();
    q.out = (work / r.dir).string();
    q.format = r.format;
    q.weights_only = true;
    q.verify = "full";
    q.report = (work / (std::string(r.dir) + "-report.json")).string();
    fmt::print("\n== fp4kit quantize {} {} --format {} --weights-only --verify full\n", q.source,
               q.out, q.format);
    QuantizeOutcome outcome;
    const int rc = run_quantize_job(q, &outcome);
    if (rc != 0) return rc;
  }
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
