// verify_checkpoint: reads the configs, groups tensors by module, runs the structural checks and,
// with a source, the numeric ones.
#include "fp4kit/verify/verify.hpp"

#include <fmt/core.h>

#include <chrono>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/verify/findings.hpp"
#include "fp4kit/verify/inventory.hpp"
#include "fp4kit/verify/numeric_checks.hpp"
#include "fp4kit/verify/quant_config.hpp"
#include "fp4kit/verify/structural_checks.hpp"

namespace fp4kit::verify {

VerifyReport verify_checkpoint(const std::filesystem::path& dir, const VerifyOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  VerifyReport report;
  report.dir = dir;
  Findings out;
  auto finish = [&]() {
    report.findings = std::move(out.list);
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report;
  };

  std::unique_ptr<Checkpoint> ckpt;
  try {
    ckpt = Checkpoint::open(dir);
  } catch (const Error& e) {
    out.error("checkpoint.read", "", e.what());
    return finish();
  }
  // The source must open: a typo in --source is a usage problem, not a finding.
  std::unique_ptr<Checkpoint> source;
  if (!options.source.empty()) {
    source = Checkpoint::open(options.source);
    report.numeric = true;
    report.source = options.source;
    report.max_rel_rmse = options.max_rel_rmse > 0 ? options.max_rel_rmse : kDefaultMaxRelRmse;
  }

  NameContext ctx;
  int64_t num_experts = 0;
  try {
    const ModelConfig mc = ModelConfig::parse(ckpt->config(), (dir / "config.json").string());
    ctx.num_hidden_layers = mc.num_hidden_layers;
    num_experts = mc.num_experts;
  } catch (const Error& e) {
    out.warning("config.format", "", fmt::format("config.json: {}", e.what()));
  }

  const DeclaredQuant declared = read_declared_quant(ckpt->config(), ckpt->dir(), out);
  report.format = std::string(format_name(declared.format));
  report.quant_algo = declared.quant_algo;
  report.weights_only = declared.weights_only;
  const auto mods = build_inventory(*ckpt, declared, ctx);
  if (declared.format == QuantFormat::None) {
    report.tensors = ckpt->tensor_names().size();
    return finish();
  }
  report.structural = true;
  const auto scales = run_structural_checks(*ckpt, declared, mods, num_experts, out, report);
  if (source)
    run_numeric_checks(*ckpt, *source, mods, scales, report.max_rel_rmse, out, report);
  return finish();
}

}  // namespace fp4kit::verify
