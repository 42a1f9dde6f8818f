// fp4kit quantize SRC OUT: command-line options of the quantize job.
#include <map>
#include <memory>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/quantize_job.hpp"

namespace fp4kit::cli {

namespace {

// --include/--exclude in command-line order (later wins), after the recipe's rules.
std::vector<Rule> rules_in_order(CLI::App* sub) {
  std::vector<Rule> rules;
  std::map<const CLI::Option*, size_t> used;
  for (const CLI::Option* opt : sub->parse_order()) {
    const bool inc = opt->get_name() == "--include";
    const bool exc = opt->get_name() == "--exclude";
    if (!inc && !exc) continue;
    const auto& values = opt->results();
    size_t& i = used[opt];
    if (i >= values.size()) continue;
    rules.push_back({inc ? Rule::Kind::Include : Rule::Kind::Exclude, values[i],
                     opt->get_name() + " " + values[i]});
    ++i;
  }
  return rules;
}

}  // namespace

Command add_quantize(CLI::App& app) {
  auto args = std::make_shared<QuantizeArgs>();
  auto* sub = app.add_subcommand("quantize", "Quantize a Hugging Face checkpoint to NVFP4");
  sub->add_option("SRC", args->source, "source checkpoint directory")->required();
  sub->add_option("OUT", args->out,
                  "output directory, or OUT.gguf file with --format gguf (written atomically)");
  sub->add_option("--format", args->format,
                  "output format: modelopt (default), compressed-tensors, or gguf (one llama.cpp "
                  "file; an NVFP4 SRC is repacked without requantizing)")
      ->check(CLI::IsMember({"modelopt", "compressed-tensors", "gguf"}));
  sub->add_flag("--weights-only", args->weights_only,
                "W4A16: NVFP4 weights, no activation scales (no calibration needed)");
  sub->add_option("--stats", args->stats, "activation statistics from `fp4kit calibrate` (W4A4)");
  sub->add_option("--include", "quantize modules matching GLOB (repeatable; later rules win)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--exclude", "keep modules matching GLOB unquantized (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--recipe", args->recipe, "rules file (see docs: include/exclude per line)");
  sub->add_flag("--dry-run", args->dry_run, "print the plan and stop");
  sub->add_option("--plan-json", args->plan_json, "write the plan as JSON");
  add_threads_option(sub, args->threads);
  sub->add_option("--report", args->report, "write plan, per-tensor results and summary as JSON");
  sub->add_option("--scale-form", args->scale_form,
                  "weight_scale_2 rounding: gpu = amax*(1/2688) as ModelOpt on GPU (default, "
                  "published checkpoints), cpu = amax/2688 as ModelOpt on CPU")
      ->check(CLI::IsMember({"gpu", "cpu"}));
  sub->add_option("--max-shard-size", args->max_shard_size, "e.g. 5GB, 500MB");
  sub->add_flag("--force", args->force, "replace a non-empty OUT");
  sub->add_option("--verify", args->verify,
                  "check the output before committing it: structural (default), full (also "
                  "compares every tensor with the source), none")
      ->check(CLI::IsMember({"structural", "full", "none"}));
  sub->add_flag("--input-scale-fallback", args->input_scale_fallback,
                "input groups without statistics take the largest amax of the same projection "
                "kind instead of failing");
  sub->add_flag("--quantize-linear-attn", args->quantize_linear_attn,
                "also quantize linear-attention projections (Qwen3.5/3.6, Qwen3-Next)");
  sub->add_option("--scales", args->scales,
                  "block scales: max = amax/6 as ModelOpt (default, byte-identical), mse = the "
                  "E4M3 code with the least squared error per block, hessian = the code with the "
                  "least dw^T H dw (H from `calibrate --hessian`, needs --stats; linears without "
                  "enough tokens use mse and the report says so)")
      ->check(CLI::IsMember({"max", "mse", "hessian"}));
  sub->add_option("--global-norm", args->global_norm,
                  "M in weight_scale_2 = amax / (6 M): 448 (ModelOpt, default) or 256 (headroom "
                  "so that searched block scales can exceed amax_b/6 for the largest blocks)")
      ->check(CLI::IsMember({448, 256}));
  sub->add_option("--hessian-min-tokens", args->hessian_min_tokens,
                  "--scales hessian: a linear that saw fewer calibration tokens uses mse "
                  "(default 1024)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--gptq", args->gptq,
                "GPTQ on top of the chosen block scales (they stay fixed): codes chosen column by "
                "column with error feedback; needs --data FILE, or --stats from `calibrate "
                "--hessian ... --full-xtx`; a linear without usable X^T X keeps its plain codes "
                "(reported)");
  sub->add_option("--data", args->data,
                  "calibration text (text, JSONL or .u16/.u32 ids) for --gptq / --scales hessian: "
                  "the engine runs the model layer by layer and quantizes each layer with its own "
                  "X^T X (memory: one layer's X^T X); W4A4 still needs --stats for input scales");
  sub->add_option("--samples", args->samples, "--data: number of windows (default 128)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--seq-len", args->seq_len, "--data: tokens per window (default 512)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--text-field", args->text_field, "--data: JSONL field holding the text");
  sub->add_flag("--gptq-sequential", args->gptq_sequential,
                "--gptq --data: each layer's inputs come from the layers before it already "
                "quantized (W4A4: and their inputs), as the output will run; default: from the "
                "unquantized model (the same bytes as calibrate --full-xtx + --stats)");
  sub->add_option("--gptq-damp", args->gptq_damp,
                  "GPTQ dampening: H += damp * mean(diag H) * I (default 0.01)")
      ->check(CLI::Range(0.0, 10.0));
  sub->add_flag("--allow-destroyed", args->allow_destroyed,
                "commit tensors that quantization destroys (relative RMSE >= 0.5, e.g. all "
                "rounded to zero) instead of failing; only to compare with tools that write them");
  return {sub, [args, sub] {
    args->rules = rules_in_order(sub);
    return run_quantize_job(*args);
  }};
}

}  // namespace fp4kit::cli
