#include "fp4kit/cli/gptq_layers.hpp"

#include <fmt/core.h>

#include <chrono>
#include <map>
#include <mutex>
#include <set>

#include "fp4kit/engine/backend.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/data_source.hpp"
#include "fp4kit/text/piece_encoder.hpp"
#include "fp4kit/engine/forward.hpp"
#include "fp4kit/engine/stats_collector.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/quant/stream.hpp"

namespace fp4kit::cli {

namespace {

// Keeps the quantized weights of one layer (run_stream's output for the layer's entries).
class LayerSink : public EntrySink {
 public:
  explicit LayerSink(const Plan& plan) : plan_(plan) {}
  void quantized(size_t entry, QuantizedWeight&& q) override {
    weights[plan_.entries[entry].name] = std::move(q);
  }
  void copied(size_t entry, std::span<const uint8_t>) override {
    throw Error(fmt::format("layer pass: '{}' is not a quantized entry (internal error)",
                            plan_.entries[entry].name));
  }
  std::map<std::string, QuantizedWeight> weights;  // by module

 private:
  const Plan& plan_;
};

// --gptq-sequential: the layer's linears as the output holds them (dequantized exactly as
// engine::load_linear decodes format A; W4A4: inputs quantized with 1 / input_scale), the rest
// of the layer from the source. Records which modules it served.
class QuantizedLayer : public engine::WeightOverlay {
 public:
  QuantizedLayer(const Checkpoint& source, const std::map<std::string, QuantizedWeight>& w)
      : source_(source), w_(w) {}
  bool find(const engine::LinearRef& ref, bool, engine::LinearWeights& out) const override {
    const auto it = w_.find(ref.module);
    if (it == w_.end()) return false;
    const QuantizedWeight& q = it->second;
    out = engine::load_linear(source_, ref, false);  // shape and bias as the source has them
    if (q.packed.size() != out.n * out.k / 2)
      throw Error(fmt::format("layer pass: '{}' has {} x {} weights but {} packed bytes "
                              "(internal error)", ref.module, out.n, out.k, q.packed.size()));
    nvfp4_dequantize(q.packed.data(), q.scales.data(), out.n, out.k, q.s2, out.w.data());
    out.nvfp4 = true;
    out.act_global_scale = q.input_scale > 0.0f ? 1.0f / q.input_scale : 0.0f;
    const std::lock_guard<std::mutex> lock(mu_);
    served_.insert(ref.module);
    return true;
  }
  bool served(const std::string& module) const {
    const std::lock_guard<std::mutex> lock(mu_);
    return served_.count(module) > 0;
  }

 private:
  const Checkpoint& source_;
  const std::map<std::string, QuantizedWeight>& w_;
  mutable std::mutex mu_;
  mutable std::set<std::string> served_;
};

uint64_t stats_bytes(const ActivationStats& st) {
  uint64_t n = 0;
  for (const auto& [m, v] : st.xtx) n += v.size() * sizeof(double);
  for (const auto& [m, v] : st.hessian_blocks) n += v.size() * sizeof(double);
  return n;
}

}  // namespace

LayerPassResult run_layer_pass(const Checkpoint& source, const Plan& plan,
                               const std::vector<float>& input_scales, const QuantOptions& quant,
                               const LayerPassArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  std::shared_ptr<engine::Backend> be(engine::make_cpu_backend());
  const engine::Engine eng(source, be);
  const engine::ModelSpec& spec = eng.spec();

  // The quantized 2-D entries of each decoder layer (by module prefix).
  std::vector<std::vector<size_t>> order(spec.layers.size());
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const PlanEntry& e = plan.entries[i];
    if (e.action != Action::Quantize) continue;
    for (size_t li = 0; li < spec.layers.size(); ++li) {
      if (!e.name.starts_with(spec.layers[li].prefix)) continue;
      if (e.bmm_experts > 0) {
        if (a.sequential)
          throw Error(fmt::format("quantize --gptq-sequential: '{}' holds 3-D BMM experts, which "
                                  "GPTQ does not quantize; run without --gptq-sequential",
                                  e.name));
        break;  // left to the export stream (no GPTQ for 3-D experts)
      }
      order[li].push_back(i);
      break;
    }
  }

  text::CalibrationOptions copt;
  copt.samples = a.samples;
  copt.seq_len = a.seq_len;
  copt.text_field = a.text_field;
  const auto samples = engine::load_calibration_windows(a.data, source.dir(), copt);
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t i = 0; i < samples.samples(); ++i) {
    auto s = samples.sample(i);
    seqs.emplace_back(s.begin(), s.end());
  }

  if (const auto w = text::forced_cuts_warning(a.data, samples.forced_cuts); !w.empty() && !a.quiet)
    fmt::print(stderr, "fp4kit: warning: {}\n", w);
  LayerPassResult r;
  r.codes = std::make_unique<CodeStore>(a.scratch_dir);
  r.layers = spec.layers.size();
  r.tokens = seqs.size() * static_cast<size_t>(samples.seq_len);
  if (!a.quiet)
    fmt::print("gptq layer pass: {} layers over {} samples x {} tokens of {}{}\n", r.layers,
               seqs.size(), samples.seq_len, a.data,
               a.sequential ? " (sequential: each layer sees the quantized layers before it)" : "");
  const std::map<std::string, float> act_gs =
      a.w4a4_stats ? engine::w4a4_act_global_scales(*a.w4a4_stats)
                   : std::map<std::string, float>{};
  engine::ForwardOptions fo;
  fo.simulate_activations = false;  // the source model, as calibrate runs it
  engine::ForwardPass pass(eng, seqs, fo);
  for (size_t li = 0; li < spec.layers.size(); ++li) {
    if (a.sequential) pass.save();
    ActivationStats st;
    {
      engine::StatsCollector collector;
      collector.collect_hessian(act_gs, /*full=*/true);
      pass.run_layer(li, &collector);
      st = collector.take();
    }
    const uint64_t held = stats_bytes(st);
    r.peak_stats_bytes = std::max(r.peak_stats_bytes, held);
    r.total_stats_bytes += held;
    QuantOptions o = quant;
    o.stats = &st;
    o.codes = nullptr;
    LayerSink sink(plan);
    const std::vector<EntryResult> done =
        run_stream(plan, source, order[li], input_scales, o, sink, {});
    size_t with_gptq = 0;
    for (const EntryResult& e : done) {
      const std::string& m = plan.entries[e.entry].name;
      const QuantizedWeight& q = sink.weights.at(m);
      r.codes->put(m, q.s2, q.packed, q.scales, e.scales);
      with_gptq += e.scales.gptq ? 1 : 0;
    }
    r.linears += done.size();
    st = ActivationStats{};  // this layer's X^T X is no longer needed
    if (a.sequential) {
      pass.restore();
      const QuantizedLayer overlay(source, sink.weights);
      be->set_overlay(&overlay);
      try {
        pass.run_layer(li, nullptr);
      } catch (...) {
        be->set_overlay(nullptr);
        throw;
      }
      be->set_overlay(nullptr);
      // A routed expert the router sent no token to is never loaded; any other linear must have
      // run with its quantized weights (a family that splits a fused projection itself would not).
      for (size_t i : order[li]) {
        const PlanEntry& e = plan.entries[i];
        if (e.expert < 0 && !overlay.served(e.name))
          throw Error(fmt::format("quantize --gptq-sequential: layer {}'s '{}' was not run with "
                                  "its quantized weights (this family loads it another way); run "
                                  "without --gptq-sequential", li, e.name));
      }
    }
    if (!a.quiet) {
      fmt::print("layer {}/{}: {} linears quantized ({} with GPTQ), X^T X {:.1f} MiB, {:.1f} s\n",
                 li + 1, r.layers, done.size(), with_gptq,
                 static_cast<double>(held) / (1 << 20), seconds());
      std::fflush(stdout);
    }
  }
  r.seconds = seconds();
  return r;
}

}  // namespace fp4kit::cli
