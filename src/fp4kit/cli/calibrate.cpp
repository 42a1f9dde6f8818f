// fp4kit calibrate SRC --data FILE -o STATS: runs the model layer by layer over calibration
// tokens and writes the activation statistics file that `quantize --stats` reads.
#include <fmt/core.h>

#include <chrono>
#include <thread>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/device.hpp"
#include "fp4kit/cli/jobs.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/data_source.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/stats_collector.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::cli {
CalibrateOutcome run_calibrate_job(const CalibrateArgs& o) {
  set_thread_count(o.threads);
  engine::set_blas_threads(o.threads);
  const auto t0 = std::chrono::steady_clock::now();
  const Device dev = resolve_device(o.device, o.gpu_fp32);
  auto ckpt = Checkpoint::open(o.src);
  Forward eng(dev, *ckpt, o.gpu_fp32);
  const auto& spec = eng.spec();

  text::CalibrationOptions copt;
  copt.samples = o.samples;
  copt.seq_len = o.seq_len;
  copt.text_field = o.text_field;
  const auto samples = engine::load_calibration_windows(o.data, o.src, copt);
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t i = 0; i < samples.samples(); ++i) {
    auto s = samples.sample(i);
    seqs.emplace_back(s.begin(), s.end());
  }
  const size_t tokens = seqs.size() * static_cast<size_t>(samples.seq_len);
  if (!o.quiet) {
    fmt::print("calibrate: {} ({}, {} layers{})\n", o.src, engine::family_name(spec.family),
               spec.n_layers,
               spec.n_experts > 0 ? fmt::format(", {} experts, top-{}", spec.n_experts, spec.top_k)
                                  : std::string());
    fmt::print("data: {}: {} samples x {} tokens = {} tokens (stream of {} tokens)\n", o.data,
               seqs.size(), samples.seq_len, tokens, samples.stream_tokens);
    fmt::print("device: {}\n", dev.description);
    fmt::print("{}\n", eng.memory_line(tokens, o.chunk, static_cast<size_t>(samples.seq_len)));
    if (o.all_experts) fmt::print("--all-experts: every routed expert runs on every token (statistics only)\n");
  }

  engine::StatsCollector stats;
  engine::ForwardOptions fo;
  fo.all_experts = o.all_experts;
  fo.simulate_activations = false;  // statistics describe the unquantized model
  fo.chunk_tokens = o.chunk;
  fo.on_layer = [&](int64_t l, int64_t n) {
    if (o.on_layer) o.on_layer(l + 1, n);
    if (o.quiet) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("layer {}/{} done ({:.1f} s)\n", l + 1, n, s);
    std::fflush(stdout);
  };
  const auto tf = std::chrono::steady_clock::now();
  eng.run(seqs, fo, &stats, {});
  const double forward_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tf).count();

  ActivationStats st = stats.result();
  st.metadata = {{"source", o.src},
                 {"data", o.data},
                 {"samples", std::to_string(seqs.size())},
                 {"seq_len", std::to_string(samples.seq_len)},
                 {"tokens", std::to_string(tokens)},
                 {"all_experts", o.all_experts ? "true" : "false"},
                 {"compute", !dev.cuda ? "float32"
                             : o.gpu_fp32 ? "float32 (cuda)"
                                          : "tf32 products, float32 elsewhere (cuda)"}};
  std::vector<std::string> idle;
  for (const auto& [e, n] : st.routed_tokens)
    if (n == 0) idle.push_back(e);
  write_stats_file(o.out, st);
  CalibrateOutcome r;
  r.samples = seqs.size();
  r.seq_len = static_cast<size_t>(samples.seq_len);
  r.tokens = tokens;
  r.linears = st.input_amax.size();
  r.idle_experts = std::move(idle);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.forward_seconds = forward_s;
  r.device = dev.description;
  if (o.quiet) return r;
  fmt::print("linears with statistics: {}\n", r.linears);
  if (!st.routed_tokens.empty()) {
    fmt::print("experts with no routed tokens: {}{}\n", r.idle_experts.size(),
               r.idle_experts.empty() ? "" : (o.all_experts ? " (statistics from --all-experts)" :
                                                     " (no statistics: quantize uses the layer value)"));
    for (const auto& e : r.idle_experts) fmt::print("  {}\n", e);
  }
  fmt::print("time: {:.2f} s ({:.2f} s forward), {:.0f} tokens/s\n", r.seconds, forward_s,
             forward_s > 0 ? static_cast<double>(tokens) / forward_s : 0.0);
  fmt::print("wrote {}\n", o.out);
  return r;
}

Command add_calibrate(CLI::App& app) {
  auto o = std::make_shared<CalibrateArgs>();
  auto* sub = app.add_subcommand(
      "calibrate", "run the model over calibration text and write activation statistics");
  sub->add_option("SRC", o->src, "source checkpoint directory")->required();
  sub->add_option("--data", o->data, "calibration data: text, JSONL, or .u16/.u32 token ids")
      ->required();
  sub->add_option("-o,--output", o->out, "stats file to write (safetensors)")->required();
  sub->add_option("--samples", o->samples, "number of windows (default 128)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--seq-len", o->seq_len, "tokens per window (default 512)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--text-field", o->text_field, "JSONL field holding the text (default text)");
  sub->add_flag("--all-experts", o->all_experts,
                "run every routed expert on every token (statistics only; routing unchanged)");
  sub->add_option("--threads", o->threads, "worker threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--device", o->device,
                  "auto (default: the first CUDA GPU when there is one, else the CPU), cpu, "
                  "cuda or cuda:N")
      ->check(device_validator());
  sub->add_flag("--gpu-fp32", o->gpu_fp32,
                "GPU: plain float32 matrix products instead of TF32 (slower, closer to the CPU)");
  sub->add_option("--chunk-tokens", o->chunk, "tokens per block of the linears (default 2048)")
      ->check(CLI::PositiveNumber)
      ->group("");
  return {sub, [o]() {
            run_calibrate_job(*o);
            return 0;
          }};
}

}  // namespace fp4kit::cli
