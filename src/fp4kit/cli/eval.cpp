// fp4kit eval QUANT [--base SRC] --data FILE: perplexity of QUANT and, against the base model,
// KL divergence / top-1 agreement / Δp in the layout of llama.cpp's `llama-perplexity
// --kl-divergence` summary. The definitions and the base log-prob file live in engine/evaluate.hpp.
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/device.hpp"
#include "fp4kit/cli/jobs.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/data_source.hpp"
#include "fp4kit/engine/evaluate.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/json_output.hpp"
#include "fp4kit/io/path_identity.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "fp4kit/text/piece_encoder.hpp"

namespace fp4kit::cli {
namespace {

struct EvalCliOptions : EvalArgs {
  bool json = false;
};

size_t count_suffix(const Checkpoint& c, const std::string& suffix) {
  size_t n = 0;
  for (const auto& t : c.tensor_names())
    if (t.size() > suffix.size() && t.compare(t.size() - suffix.size(), suffix.size(), suffix) == 0)
      ++n;
  return n;
}

struct EvalRun {
  engine::EvalResult r;
  nlohmann::json j;  // what --json prints
  size_t act_linears = 0;
  bool simulate_activations = true;
};

EvalRun evaluate_job(const EvalArgs& o) {
  if (o.data.empty() && o.base_logits.empty())
    throw UsageError("eval: --data is required (unless --base-logits supplies the tokens)");
  if (!o.base.empty() && !o.base_logits.empty())
    throw UsageError("eval: give either --base or --base-logits, not both");
  const std::vector<InputPath> inputs = {{o.quant, "QUANT checkpoint"},
                                         {o.base, "--base checkpoint"},
                                         {o.data, "--data file"},
                                         {o.base_logits, "--base-logits file"}};
  if (!o.save_base.empty()) check_output_file(o.save_base, "--save-base", inputs);
  if (!o.dump_logits.empty()) check_output_file(o.dump_logits, "--dump-logits", inputs);
  if (!o.save_base.empty() && !o.dump_logits.empty() && same_path(o.save_base, o.dump_logits))
    throw UsageError("eval: --save-base and --dump-logits name the same file");
  set_thread_count(o.threads);
  engine::set_blas_threads(o.threads);
  const auto t0 = std::chrono::steady_clock::now();
  const Device dev = resolve_device(o.device, o.gpu_fp32);
  auto quant = Checkpoint::open(o.quant);
  std::unique_ptr<Checkpoint> base;
  if (!o.base.empty()) base = Checkpoint::open(o.base);

  // Windows are read and encoded as they are evaluated (the file is never held whole); --tokens
  // and --chunks stop the reading at what they score.
  std::unique_ptr<engine::EvalWindowReader> reader;
  if (o.base_logits.empty()) {
    text::CalibrationOptions copt;
    copt.text_field = o.text_field;
    reader = std::make_unique<engine::EvalWindowReader>(o.data, o.quant, copt, o.ctx, o.chunks, o.tokens);
  }
  engine::EvalOptions eo;
  eo.ctx = o.ctx;
  eo.max_windows = o.chunks;
  eo.simulate_activations = !o.no_act_quant;
  eo.save_base = o.save_base;
  eo.base_logits = o.base_logits;
  eo.dump_logits = o.dump_logits;
  eo.make_runner = eval_runner(dev, o.gpu_fp32);
  const size_t act_linears =
      count_suffix(*quant, ".input_scale") + count_suffix(*quant, ".input_global_scale");
  const engine::WindowSource windows = [&reader](std::vector<int32_t>& w) { return reader->next(w); };
  EvalRun run{engine::evaluate(*quant, base.get(), windows, eo), {}, act_linears,
              eo.simulate_activations};
  if (reader)
    if (const auto w = text::forced_cuts_warning(o.data, reader->forced_cuts()); !w.empty())
      fmt::print(stderr, "fp4kit: warning: {}\n", w);
  const auto& r = run.r;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  {
    nlohmann::json& j = run.j;
    j["quant"] = o.quant;
    if (!o.base.empty()) j["base"] = o.base;
    if (!o.base_logits.empty()) j["base_logits"] = o.base_logits;
    j["data"] = o.data;
    j["ctx"] = o.ctx;
    j["windows"] = r.windows;
    j["tokens_scored"] = r.quant.count;
    j["activation_quantization"] = eo.simulate_activations && act_linears > 0;
    j["ppl"] = {{"value", r.quant.ppl}, {"uncertainty", r.quant.ppl_uncertainty},
                {"mean_nll", r.quant.mean_nll}};
    if (r.base)
      j["ppl_base"] = {{"value", r.base->ppl}, {"uncertainty", r.base->ppl_uncertainty},
                       {"mean_nll", r.base->mean_nll}};
    if (r.kld) j["kl_divergence"] = engine::kld_summary_json(*r.kld);
    j["seconds"] = secs;
    j["device"] = dev.description;
  }
  return run;
}

int run_eval(const EvalCliOptions& o) {
  const EvalRun run = evaluate_job(o);
  const auto& r = run.r;
  if (o.json) {
    fmt::print("{}\n", json_text(run.j));
    return 0;
  }
  const size_t act_linears = run.act_linears;
  fmt::print("device: {}\n", run.j["device"].get<std::string>());
  fmt::print("eval: {} windows of up to {} tokens, {} scored tokens\n", r.windows, o.ctx,
             r.quant.count);
  fmt::print("activations: {}\n",
             act_linears == 0 ? std::string("not quantized (no input_scale in the checkpoint)")
             : run.simulate_activations
                 ? fmt::format("NVFP4-simulated on {} linears (W4A4, per-16 block scales from "
                               "input_scale)", act_linears)
                 : std::string("NOT simulated (--no-act-quant), weight-only"));
  fmt::print("Final estimate: PPL = {:.4f} +/- {:.5f}   ({})\n", r.quant.ppl,
             r.quant.ppl_uncertainty, o.quant);
  if (r.base)
    fmt::print("Final estimate: PPL = {:.4f} +/- {:.5f}   (base: {})\n", r.base->ppl,
               r.base->ppl_uncertainty, o.base.empty() ? o.base_logits : o.base);
  if (r.kld) {
    if (r.kld->count < 100)
      fmt::print("(fewer than 100 scored tokens: statistics are not meaningful)\n");
    fmt::print("\n{}", engine::format_kld_summary(*r.kld));
  }
  if (!o.save_base.empty()) fmt::print("saved base log-probs to {}\n", o.save_base);
  fmt::print("time: {:.2f} s\n", run.j["seconds"].get<double>());
  return 0;
}

}  // namespace

nlohmann::json run_eval_job(const EvalArgs& args) { return evaluate_job(args).j; }

Command add_eval(CLI::App& app) {
  auto o = std::make_shared<EvalCliOptions>();
  auto* sub = app.add_subcommand(
      "eval", "perplexity of a model and KL divergence / top-1 agreement against its base");
  sub->add_option("QUANT", o->quant, "checkpoint to evaluate (quantized or not)")->required();
  sub->add_option("--base", o->base, "base (unquantized) checkpoint to compare against");
  sub->add_option("--data", o->data, "evaluation data: text, JSONL, or .u16/.u32 token ids");
  sub->add_option("--ctx", o->ctx, "tokens per window (default 512)")->check(CLI::PositiveNumber);
  sub->add_option("--chunks", o->chunks, "evaluate only the first K windows (default all)");
  sub->add_option("--tokens", o->tokens, "use only the first N tokens of the data");
  sub->add_flag("--json", o->json, "print the results as JSON");
  sub->add_option("--save-base", o->save_base,
                  "write the base model's full log-softmax per scored token (FP4KBASE file)");
  sub->add_option("--base-logits", o->base_logits,
                  "read base log-probs saved by --save-base instead of running --base");
  sub->add_flag("--no-act-quant", o->no_act_quant,
                "W4A4 checkpoints: do not simulate activation quantization");
  sub->add_option("--text-field", o->text_field, "JSONL field holding the text (default text)");
  add_threads_option(sub, o->threads);
  sub->add_option("--device", o->device,
                  "auto (default: the first CUDA GPU when there is one, else the CPU), cpu, "
                  "cuda or cuda:N")
      ->check(device_validator());
  sub->add_flag("--gpu-fp32", o->gpu_fp32,
                "GPU: plain float32 matrix products instead of TF32 (slower, closer to the CPU)");
  sub->add_option("--dump-logits", o->dump_logits,
                  "testing: write QUANT's raw float32 logits [positions, vocab] of every window");
  return {sub, [o]() { return run_eval(*o); }};
}

}  // namespace fp4kit::cli
