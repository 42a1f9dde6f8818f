// The quantize job: plan, stream, write atomically, check, summarise.
#include <fmt/core.h>

#include <chrono>

#include "fp4kit/cli/quantize_job.hpp"
#include "fp4kit/cli/gptq_layers.hpp"
#include "fp4kit/cli/progress.hpp"
#include "fp4kit/cli/size_arg.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/export/checkpoint_export.hpp"
#include "fp4kit/export/gguf_export.hpp"
#include "fp4kit/export/summary.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/checkpoint_fingerprint.hpp"
#include "fp4kit/io/json_output.hpp"
#include "fp4kit/io/output_dir.hpp"
#include "fp4kit/io/output_file.hpp"
#include "fp4kit/io/path_identity.hpp"
#include "fp4kit/io/phase_trace.hpp"
#include "fp4kit/io/write_tuning.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/plan/recipe.hpp"
#include "fp4kit/quant/input_scales.hpp"
#include "fp4kit/verify/gguf_checks.hpp"
#include "fp4kit/verify/verify.hpp"

namespace fp4kit::cli {

namespace {

// Every output path is checked before the first byte of the source is read, so that a bad
// --report does not surface after OUT was committed, and no output can replace an input.
void check_outputs(const QuantizeArgs& a) {
  const std::vector<InputPath> inputs = {{a.source, "source checkpoint"},
                                         {a.stats, "--stats file"},
                                         {a.data, "--data file"},
                                         {a.recipe, "--recipe file"},
                                         {a.out, "output directory OUT"},
                                         {a.out.empty() ? "" : a.out + ".partial", "OUT.partial"}};
  // A GGUF OUT is one file (OutputFile), every other format a directory (OutputDir).
  if (!a.dry_run && a.format == "gguf") check_output_file(a.out, "OUT", inputs);
  else if (!a.dry_run) check_output_dir(a.out, a.source, a.force);
  if (!a.plan_json.empty()) check_output_file(a.plan_json, "--plan-json", inputs);
  if (!a.report.empty()) check_output_file(a.report, "--report", inputs);
  if (!a.plan_json.empty() && !a.report.empty() && same_path(a.plan_json, a.report))
    throw UsageError("quantize: --plan-json and --report name the same file");
}

void check_gguf_out(const QuantizeArgs& a) {
  if (!a.out.ends_with(".gguf"))
    throw Error(fmt::format("quantize --format gguf: OUT '{}' must be a file name ending in .gguf",
                            a.out));
  if (a.verify == "full")
    throw Error("quantize --format gguf: --verify full compares safetensors checkpoints; check a "
                "GGUF with --format modelopt's output or the gguf Python package");
}

// Reads the finished GGUF back as llama.cpp would (verify/gguf_checks.hpp) before it gets its
// final name; returns the line to print.
std::string verify_gguf_partial(const QuantizeArgs& a, const std::filesystem::path& partial) {
  if (a.verify == "none") return "";
  const verify::GgufCheckResult r = verify::check_gguf(partial);
  if (!r.ok()) {
    if (!a.quiet) fmt::print(stderr, "{}", r.format());
    throw Error(fmt::format("quantize: the GGUF failed verification; nothing was written to {} "
                            "(see the findings above)",
                            a.out));
  }
  return fmt::format("  verify (structural): passed ({} tensors, {} NVFP4, {} block-scale bytes "
                     "with bit 7 clear)\n",
                     r.tensors, r.nvfp4, r.scale_bytes);
}

uint64_t planned_source_bytes(const Plan& plan, const Checkpoint& source) {
  uint64_t total = 0;
  for (const auto& e : plan.entries)
    if (e.action != Action::Drop) total += source.info(e.source.tensor).nbytes();
  return total;
}

// --format gguf from an NVFP4 checkpoint: the same codes and scales, repacked.
int run_gguf_repack(const QuantizeArgs& a, const Checkpoint& source, const ModelConfig& config) {
  check_gguf_out(a);
  if (!a.stats.empty() || !a.rules.empty() || !a.recipe.empty() || a.dry_run)
    throw Error(fmt::format("quantize --format gguf: {} is already NVFP4 and is repacked as it "
                            "is; --stats, --include/--exclude, --recipe and --dry-run do not "
                            "apply",
                            source.dir().string()));
  OutputFile out(a.out, source.dir(), a.force);
  const RepackResult r = repack_gguf(source, config, out.partial());
  const std::string verified = verify_gguf_partial(a, out.partial());
  out.commit();
  if (a.quiet) return 0;
  for (const auto& n : r.notes) fmt::print(stderr, "fp4kit: note: {}\n", n);
  fmt::print("wrote {} (gguf, repacked from NVFP4 without requantizing)\n", a.out);
  fmt::print("  {} NVFP4 linears repacked bit for bit, {} written as their exact F32 decode "
             "(notes above), {} other tensors, {} bytes of tensor data\n",
             r.nvfp4, r.dequantized, r.plain, r.bytes_written);
  fmt::print("{}", verified);
  return 0;
}

// Warnings found while writing: on stderr (unless quiet) and in the outcome.
void warn_all(const QuantizeArgs& a, QuantizeOutcome* outcome, const std::vector<std::string>& ws) {
  for (const auto& w : ws) {
    if (!a.quiet) fmt::print(stderr, "fp4kit: warning: {}\n", w);
    if (outcome) outcome->warnings.push_back(w);
  }
}

int run_gguf_quantize(const QuantizeArgs& a, const Checkpoint& source, const ModelConfig& config,
                      const Plan& plan, const std::vector<float>& input_scales,
                      const QuantOptions& quant, std::chrono::steady_clock::time_point t0,
                      QuantizeOutcome* outcome) {
  check_gguf_out(a);
  OutputFile out(a.out, source.dir(), a.force);
  Progress progress(planned_source_bytes(plan, source));
  ExportResult result = export_gguf(
      plan, source, config, input_scales, quant, out.partial(),
      [&](size_t done, size_t total, const EntryResult& r) {
        const PlanEntry& e = plan.entries[r.entry];
        if (a.on_progress) return a.on_progress(done, total, e.name, r.bytes_in);
        if (a.quiet) return;
        progress.update(done, total, r.bytes_in, e.name,
                        fmt::format("{} ({})", action_name(e.action), e.reason));
      });
  if (!a.quiet && !a.on_progress) progress.finish();
  warn_all(a, outcome, nonfinite_warnings(plan, result));
  const std::string verified = verify_gguf_partial(a, out.partial());
  out.commit();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const QuantizeSummary summary = summarize(plan, result, seconds);
  for (const auto& n : result.notes) fmt::print(stderr, "fp4kit: note: {}\n", n);
  if (!a.quiet) {
    fmt::print("wrote {} (gguf, {})\n", a.out, a.weights_only ? "weights-only W4A16" : "W4A4");
    fmt::print("{}{}", format_summary(summary), verified);
  }
  const nlohmann::json report = {{"plan", plan.to_json()},
                                 {"tensors", entries_json(plan, result)},
                                 {"summary", summary_json(summary)}};
  if (!a.report.empty()) write_json_file(a.report, report);
  if (outcome) outcome->summary = summary, outcome->report = report;
  return 0;
}

}  // namespace

int run_quantize_job(const QuantizeArgs& a, QuantizeOutcome* outcome) {
  const auto t0 = std::chrono::steady_clock::now();
  trace_phase("quantize starts");
  if (a.threads > 0) set_thread_count(a.threads);
  if (!a.dry_run && a.out.empty()) throw UsageError("quantize: OUT is required (or use --dry-run)");
  if (a.weights_only && !a.stats.empty() && a.scales != "hessian" && !a.gptq)
    throw UsageError("quantize: --weights-only takes no --stats (weight-only output has no "
                     "activation scales; only --scales hessian and --gptq read the stats file): drop one "
                     "of the two");
  const bool layer_pass = !a.data.empty();
  if (layer_pass && !a.gptq && a.scales != "hessian")
    throw UsageError("quantize: --data feeds --gptq or --scales hessian (X^T X per layer from the "
                     "engine); add one of them, or drop --data");
  if (a.gptq_sequential && !(a.gptq && layer_pass))
    throw UsageError("quantize: --gptq-sequential runs GPTQ layer by layer over calibration "
                     "text: it needs --gptq and --data FILE");
  if (layer_pass && a.weights_only && !a.stats.empty())
    throw UsageError("quantize: with --data and --weights-only the stats file is not read (X^T X "
                     "comes from the engine, and W4A16 has no input scales): drop --stats");
  if (!layer_pass && (a.samples != 128 || a.seq_len != 512 || a.text_field != "text"))
    throw UsageError("quantize: --samples, --seq-len and --text-field choose the windows of "
                     "--data: add --data FILE or drop them");
  check_outputs(a);
  write_tuning();  // a malformed FP4KIT_WRITERS & co. is an error before anything is read

  auto source = Checkpoint::open(a.source);
  trace_phase("source opened");
  for (const auto& w : source->warnings())
    if (!a.quiet) fmt::print(stderr, "fp4kit: warning: {}\n", w);
  const ModelConfig config =
      ModelConfig::parse(source->config(), (source->dir() / "config.json").string());

  const bool gguf = a.format == "gguf";
  if (gguf && is_nvfp4_checkpoint(*source)) return run_gguf_repack(a, *source, config);
  // Already NVFP4: a W4A4 run would copy those linears' codes and scales as they are, without
  // the input_scale W4A4 loaders need (and fp4kit never re-quantizes NVFP4 codes).
  if (!gguf && !a.weights_only && is_nvfp4_checkpoint(*source))
    throw Error(fmt::format(
        "{}: already an NVFP4 checkpoint (weight + weight_scale + weight_scale_2); W4A4 needs "
        "an input_scale for every quantized linear, and fp4kit does not re-quantize NVFP4 codes. "
        "Quantize the unquantized (BF16 / FP16 / FP8) checkpoint with --stats, or repack this "
        "one with --format gguf",
        a.source));

  PlanOptions plan_options;
  if (!a.recipe.empty()) plan_options = load_recipe(a.recipe);
  for (const auto& r : a.rules) plan_options.rules.push_back(r);
  if (a.quantize_linear_attn) plan_options.quantize_linear_attn = true;
  if (gguf)
    set_gguf_plan_options(plan_options, config, (source->dir() / "config.json").string());
  const Plan plan = build_plan(*source, config, plan_options);

  if (!a.quiet)
    for (const auto& w : plan.warnings) fmt::print(stderr, "fp4kit: warning: {}\n", w);
  if (outcome) {
    outcome->warnings = source->warnings();
    outcome->warnings.insert(outcome->warnings.end(), plan.warnings.begin(), plan.warnings.end());
  }
  if (!a.plan_json.empty()) write_json_file(a.plan_json, plan.to_json());
  if (a.dry_run) {
    if (!a.quiet) fmt::print("{}", format_plan_table(plan, a.weights_only));
    if (outcome) outcome->report = {{"plan", plan.to_json()}};
    return 0;
  }

  ExportOptions eo;
  eo.quant.format = a.format == "compressed-tensors" ? OutputFormat::CompressedTensors
                                                     : OutputFormat::ModelOpt;
  eo.quant.weights_only = a.weights_only;
  eo.quant.scale_form = a.scale_form == "cpu" ? ScaleForm::Cpu : ScaleForm::Gpu;
  eo.quant.input_scale_fallback = a.input_scale_fallback;
  eo.quant.allow_destroyed = a.allow_destroyed;
  eo.max_shard_bytes = parse_size_arg(a.max_shard_size, "--max-shard-size");

  eo.quant.scales = a.scales == "mse"       ? ScaleMethod::Mse
                    : a.scales == "hessian" ? ScaleMethod::Hessian
                                            : ScaleMethod::Max;
  eo.quant.global_norm = static_cast<float>(a.global_norm);
  eo.quant.hessian_min_tokens = a.hessian_min_tokens;
  eo.quant.gptq = a.gptq;
  eo.quant.gptq_damp = a.gptq_damp;
  ActivationStats stats;
  if (!a.stats.empty() &&
      (!a.weights_only || eo.quant.scales == ScaleMethod::Hessian || a.gptq)) {
    stats = read_stats_file(a.stats);
    // Statistics of another model would give wrong input scales (or Hessians).
    for (const auto& w : check_stats_source(plan, stats, checkpoint_fingerprint(*source), a.stats)) {
      if (!a.quiet) fmt::print(stderr, "fp4kit: warning: {}\n", w);
      if (outcome) outcome->warnings.push_back(w);
    }
  }
  if (a.gptq && !layer_pass) {
    if (a.stats.empty() || stats.xtx.empty())
      throw Error("quantize --gptq needs X^T X per linear: pass --data FILE (calibration text; "
                  "the engine gathers it layer by layer), or a stats file with X^T X "
                  "(<module>.input_xtx) from\n"
                  "  fp4kit calibrate " + a.source + " --data FILE --hessian raw|w4a4 --full-xtx "
                  "-o stats.safetensors\nand pass --stats stats.safetensors");
    eo.quant.stats = &stats;
  }
  if (eo.quant.scales == ScaleMethod::Hessian && !layer_pass) {
    if (a.stats.empty())
      throw Error("quantize: --scales hessian needs a stats file with Hessian blocks: run\n"
                  "  fp4kit calibrate " + a.source + " --data FILE --hessian -o stats.safetensors\n"
                  "and pass --stats stats.safetensors (also with --weights-only), or use --scales mse");
    if (stats.hessian_blocks.empty())
      throw Error(a.stats + ": --scales hessian: the stats file has no Hessian blocks "
                  "(<module>.input_hessian_blocks); rerun fp4kit calibrate with --hessian");
    eo.quant.stats = &stats;
    const auto kind = stats.metadata.find("hessian");
    const std::string k = kind == stats.metadata.end() ? "?" : kind->second;
    if (!a.quiet && (k == "raw") != a.weights_only)
      fmt::print(stderr,
                 "fp4kit: warning: {}: the Hessian blocks are of {} inputs but this is a {} "
                 "run (calibrate --hessian {} matches it)\n",
                 a.stats, k == "raw" ? "unquantized" : "W4A4-quantized",
                 a.weights_only ? "W4A16" : "W4A4", a.weights_only ? "raw" : "w4a4");
  }

  std::vector<float> input_scales;
  if (!a.weights_only) {
    if (a.stats.empty())
      throw Error(
          "quantize: W4A4 NVFP4 needs activation statistics for input_scale. Run\n"
          "  fp4kit calibrate " + a.source + " --data FILE -o stats.safetensors\n"
          "and pass --stats stats.safetensors, or quantize weights only with --weights-only "
          "(W4A16_NVFP4 / NVFP4A16).");
    input_scales = compute_input_scales(plan, stats, eo.quant, a.stats);
  }

  LayerPassResult layers;
  if (layer_pass) {
    LayerPassArgs la;
    la.data = a.data;
    la.text_field = a.text_field;
    la.samples = a.samples;
    la.seq_len = a.seq_len;
    la.sequential = a.gptq_sequential;
    la.w4a4_stats = a.weights_only ? nullptr : &stats;
    la.scratch_dir = std::filesystem::absolute(a.out).parent_path().string();
    la.quiet = a.quiet;
    layers = run_layer_pass(*source, plan, input_scales, eo.quant, la);
    eo.quant.codes = layers.codes.get();
  }

  if (gguf) return run_gguf_quantize(a, *source, config, plan, input_scales, eo.quant, t0, outcome);

  OutputDir out(a.out, source->dir(), a.force);
  trace_phase("plan built, OUT.partial made");
  Progress progress(planned_source_bytes(plan, *source));
  // Check the output like a loader would before it gets its final name, while the shards' fsyncs
  // are under way (commit() below renames only after everything is durable).
  verify::VerifyOptions vo;
  vo.numeric = a.verify == "full";
  if (vo.numeric) vo.source = source->dir();
  verify::VerifyReport vr;
  auto run_verify = [&] {
    if (a.verify != "none") vr = verify_checkpoint(out.partial(), vo);
  };
  ExportResult result = export_checkpoint(
      plan, *source, input_scales, eo, out.partial(),
      [&](size_t done, size_t total, const EntryResult& r) {
        const PlanEntry& e = plan.entries[r.entry];
        if (timings_enabled() && (done <= 3 || done % (total / 4 + 1) == 0))
          trace_phase(fmt::format("stream: {} of {} done ({})", done, total, e.name).c_str());
        if (a.on_progress) return a.on_progress(done, total, e.name, r.bytes_in);
        if (a.quiet) return;
        std::string detail = fmt::format("{} ({}) {} -> {} bytes", action_name(e.action),
                                         e.reason, r.bytes_in, r.bytes_out);
        if (e.action == Action::Quantize)
          detail += fmt::format(" rel-RMSE {:.4f}", r.error.rel_rmse());
        // Sizes of a sliced (fused-expert) entry count the slice, the bar the whole tensor once.
        progress.update(done, total, r.bytes_in, e.name, detail);
      },
      run_verify);
  if (!a.quiet && !a.on_progress) progress.finish();
  warn_all(a, outcome, nonfinite_warnings(plan, result));

  if (a.verify != "none") {
    if (!vr.ok()) {
      if (!a.quiet) fmt::print(stderr, "{}", vr.format_table());
      throw Error(fmt::format("quantize: the output failed verification; nothing was written to "
                              "{} (see the findings above)",
                              a.out));
    }
  }
  out.commit();
  trace_phase("committed (OUT renamed, parent fsynced)");
  trace_totals();

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const QuantizeSummary summary = summarize(plan, result, seconds);
  if (!a.quiet) {
    fmt::print("wrote {} ({} format, {})\n", a.out, a.format,
               a.weights_only ? "weights-only W4A16" : "W4A4");
    fmt::print("{}", format_summary(summary));
    if (layer_pass)
      fmt::print("  gptq layer pass: {} layers, {} linears, {} tokens, {:.2f} s; X^T X held at "
                 "once: at most {:.2f} MiB (one layer), {:.2f} MiB for all layers together\n",
                 layers.layers, layers.linears, layers.tokens, layers.seconds,
                 static_cast<double>(layers.peak_stats_bytes) / (1 << 20),
                 static_cast<double>(layers.total_stats_bytes) / (1 << 20));
    if (a.verify != "none")
      fmt::print("  verify ({}): passed, {} warning(s)\n", a.verify,
                 vr.count(verify::Finding::Warning));
  }
  if (!a.report.empty() || outcome) {
    nlohmann::json report = {{"plan", plan.to_json()},
                             {"tensors", entries_json(plan, result)},
                             {"summary", summary_json(summary)}};
    if (a.verify != "none") report["verify"] = vr.to_json();
    if (layer_pass)
      report["gptq_layer_pass"] = {{"sequential", a.gptq_sequential},
                                   {"layers", layers.layers},
                                   {"linears", layers.linears},
                                   {"tokens", layers.tokens},
                                   {"peak_stats_bytes", layers.peak_stats_bytes},
                                   {"total_stats_bytes", layers.total_stats_bytes},
                                   {"seconds", layers.seconds}};
    if (!a.report.empty()) write_json_file(a.report, report);
    if (outcome) outcome->report = std::move(report);
  }
  if (outcome) {
    outcome->summary = summary;
    outcome->verify_warnings = vr.count(verify::Finding::Warning);
  }
  return 0;
}


}  // namespace fp4kit::cli
