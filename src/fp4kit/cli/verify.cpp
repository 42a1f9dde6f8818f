// fp4kit verify OUT [--source SRC] [--report FILE.json] [--threads N] [--max-rel-rmse X]
// Checks an NVFP4 checkpoint (anyone's) against NVFP4-SPEC.md section 9. Exit 0 when there is no
// error (warnings allowed), 1 when a check fails or the input cannot be read, 2 for usage errors.
#include <fmt/core.h>

#include <fstream>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/jobs.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/json_output.hpp"
#include "fp4kit/io/path_identity.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "fp4kit/verify/gguf_checks.hpp"
#include "fp4kit/verify/verify.hpp"

namespace fp4kit::cli {
namespace {

struct VerifyCli : VerifyArgs {
  bool quiet = false;
};

// A GGUF file (fp4kit's --format gguf, or llama.cpp's converter's): verify/gguf_checks.hpp.
int run_verify_gguf(const VerifyCli& o) {
  if (!o.source.empty() || !o.report.empty())
    throw Error(fmt::format("verify {}: --source and --report apply to safetensors checkpoints, "
                            "not to a GGUF file",
                            o.dir));
  const verify::GgufCheckResult r = verify::check_gguf(o.dir);
  if (!o.quiet) fmt::print("{}:\n{}", o.dir, r.format());
  else fmt::print("{}: {}\n", o.dir, r.ok() ? "PASS" : "FAIL");
  return r.ok() ? 0 : 1;
}

int run_verify(const VerifyCli& o) {
  if (o.dir.ends_with(".gguf") && std::filesystem::is_regular_file(o.dir))
    return run_verify_gguf(o);
  const verify::VerifyReport r = run_verify_job(o);
  if (!o.quiet) fmt::print("{}", r.format_table());
  else fmt::print("{}: {} ({} errors, {} warnings)\n", o.dir, r.ok() ? "PASS" : "FAIL",
                  r.count(verify::Finding::Error), r.count(verify::Finding::Warning));
  return r.ok() ? 0 : 1;
}

}  // namespace

verify::VerifyReport run_verify_job(const VerifyArgs& o) {
  if (o.threads > 0) set_thread_count(o.threads);
  if (!o.report.empty())
    check_output_file(o.report, "--report",
                      {{o.dir, "checkpoint"}, {o.source, "--source checkpoint"}});
  verify::VerifyOptions opts;
  opts.source = o.source;
  opts.numeric = !o.source.empty();
  opts.max_rel_rmse = o.max_rel_rmse;
  verify::VerifyReport r = verify::verify_checkpoint(o.dir, opts);
  if (!o.report.empty()) {
    write_json_file(o.report, r.to_json());
  }
  return r;
}

Command add_verify(CLI::App& app) {
  auto state = std::make_shared<VerifyCli>();
  auto* sub = app.add_subcommand(
      "verify", "check an NVFP4 checkpoint (ModelOpt or compressed-tensors) for silent failures");
  sub->add_option("checkpoint", state->dir,
                  "NVFP4 checkpoint directory, or a .gguf file (llama.cpp's NVFP4)")
      ->required();
  sub->add_option("--source", state->source,
                  "the checkpoint it was made from (BF16/F16/F32, FP8 block-scaled or MXFP4, "
                  "decoded as the quantizer decodes them): compare every quantized tensor");
  sub->add_option("--report", state->report, "write the full report as JSON to this file");
  add_threads_option(sub, state->threads);
  sub->add_option("--max-rel-rmse", state->max_rel_rmse,
                  "relative RMSE above which a tensor is an error (default: measured threshold)")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--quiet,-q", state->quiet, "print only the one-line result");
  return {sub, [state]() -> int { return run_verify(*state); }};
}

}  // namespace fp4kit::cli
