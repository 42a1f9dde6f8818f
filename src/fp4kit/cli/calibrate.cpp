// fp4kit calibrate SRC --data FILE -o STATS: runs the model layer by layer over calibration
// tokens and writes the activation statistics file that `quantize --stats` reads.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/device.hpp"
#include "fp4kit/cli/jobs.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/data_source.hpp"
#include "fp4kit/text/piece_encoder.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/stats_collector.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/checkpoint_fingerprint.hpp"
#include "fp4kit/io/path_identity.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "fp4kit/text/utf8.hpp"

namespace fp4kit::cli {

CalibrateOutcome run_calibrate_job(const CalibrateArgs& o) {
  set_thread_count(o.threads);
  engine::set_blas_threads(o.threads);
  const auto t0 = std::chrono::steady_clock::now();
  check_output_file(o.out, "-o", {{o.src, "source checkpoint"}, {o.data, "--data file"}});
  // --hessian is collected by the CPU forward: "auto" means cpu then.
  const Device dev =
      resolve_device(!o.hessian.empty() && o.device == "auto" ? "cpu" : o.device, o.gpu_fp32);
  auto ckpt = Checkpoint::open(o.src);
  for (const auto& w : ckpt->warnings())
    if (!o.quiet) fmt::print(stderr, "fp4kit: warning: {}\n", w);
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
  if (const auto w = text::forced_cuts_warning(o.data, samples.forced_cuts); !w.empty() && !o.quiet)
    fmt::print(stderr, "fp4kit: warning: {}\n", w);
  // A GPU wants fewer, larger products (and fewer stream syncs for the statistics).
  const size_t chunk = o.chunk > 0 ? o.chunk : dev.cuda ? 16384 : 2048;
  if (!o.quiet) {
    fmt::print("calibrate: {} ({}, {} layers{})\n", o.src, engine::family_name(spec.family),
               spec.n_layers,
               spec.n_experts > 0 ? fmt::format(", {} experts, top-{}", spec.n_experts, spec.top_k)
                                  : std::string());
    fmt::print("data: {}: {} samples x {} tokens = {} tokens (spread over the first {} tokens)\n", o.data,
               seqs.size(), samples.seq_len, tokens, samples.stream_tokens);
    fmt::print("device: {}\n", dev.description);
    fmt::print("{}\n", eng.memory_line(tokens, chunk, static_cast<size_t>(samples.seq_len)));
    if (o.all_experts) fmt::print("--all-experts: every routed expert runs on every token (statistics only)\n");
  }

  if (!o.hessian.empty() && dev.cuda)
    throw Error("calibrate --hessian: the Hessian blocks are collected by the CPU forward only; "
                "use --device cpu");
  engine::StatsCollector stats;
  if (o.full_xtx && o.hessian.empty())
    throw Error("calibrate --full-xtx needs --hessian raw or --hessian w4a4 (which inputs)");
  if (o.hessian == "raw") stats.collect_hessian({}, o.full_xtx);
  engine::ForwardOptions fo;
  fo.all_experts = o.all_experts;
  fo.simulate_activations = false;  // statistics describe the unquantized model
  fo.chunk_tokens = chunk;
  fo.on_layer = [&](int64_t l, int64_t n) {
    if (o.on_layer) o.on_layer(l + 1, n);
    if (o.quiet) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("layer {}/{} done ({:.1f} s)\n", l + 1, n, s);
    std::fflush(stdout);
  };
  const auto tf = std::chrono::steady_clock::now();
  eng.run(seqs, fo, &stats, {});
  if (o.hessian == "w4a4") {
    // Second pass: the same forward, with each linear's input quantized as a W4A4 kernel would
    // with the input_scale quantize writes (routed experts: the max over the layer's experts).
    engine::StatsCollector second;
    second.collect_hessian(engine::w4a4_act_global_scales(stats.result()), o.full_xtx);
    if (!o.quiet) fmt::print("--hessian w4a4: second pass over the data (quantized inputs)\n");
    eng.run(seqs, fo, &second, {});
    stats = std::move(second);
  }
  const double forward_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tf).count();

  ActivationStats st = stats.result();
  // Safetensors metadata is JSON (UTF-8): a non-UTF-8 path is kept with U+FFFD for its bad bytes.
  st.metadata = {{"source", text::utf8_lossy(o.src)},
                 {"source_fingerprint", checkpoint_fingerprint(*ckpt)},
                 {"data", text::utf8_lossy(o.data)},
                 {"samples", std::to_string(seqs.size())},
                 {"seq_len", std::to_string(samples.seq_len)},
                 {"tokens", std::to_string(tokens)},
                 {"all_experts", o.all_experts ? "true" : "false"},
                 {"compute", !dev.cuda ? "float32"
                             : o.gpu_fp32 ? "float32 (cuda)"
                                          : "tf32 products, float32 elsewhere (cuda)"}};
  if (!o.hessian.empty()) st.metadata["hessian"] = o.hessian;
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
  sub->add_option("--hessian", o->hessian,
                  "also collect the 16x16 diagonal blocks of X^T X per linear for quantize "
                  "--scales hessian: raw (inputs as they are: W4A16) or w4a4 (inputs after NVFP4 "
                  "activation quantization; runs the data twice)")
      ->check(CLI::IsMember({"raw", "w4a4"}));
  sub->add_flag("--full-xtx", o->full_xtx,
                "with --hessian: also store all of X^T X per linear (K x K doubles each) for "
                "quantize --gptq");
  add_threads_option(sub, o->threads);
  sub->add_option("--device", o->device,
                  "auto (default: the first CUDA GPU when there is one, else the CPU), cpu, "
                  "cuda or cuda:N")
      ->check(device_validator());
  sub->add_flag("--gpu-fp32", o->gpu_fp32,
                "GPU: plain float32 matrix products instead of TF32 (slower, closer to the CPU)");
  sub->add_option("--chunk-tokens", o->chunk, "tokens per block of the linears (default 2048 on the CPU, 16384 on a GPU)")
      ->check(CLI::PositiveNumber)
      ->group("");
  return {sub, [o]() {
            run_calibrate_job(*o);
            return 0;
          }};
}

}  // namespace fp4kit::cli
