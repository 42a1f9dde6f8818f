// fp4kit-synth DIR [options]: writes a deterministic synthetic MoE checkpoint (real tensor names)
// for benchmarks and conformance tests.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "fp4kit/error.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Write a deterministic synthetic MoE checkpoint"};
  fp4kit::SyntheticMoeSpec s;
  std::string dir, dtype = "bf16";
  double shard_gb = 5;
  app.add_option("DIR", dir)->required();
  app.add_option("--model-type", s.model_type)->check(CLI::IsMember({"qwen3_moe", "mixtral", "deepseek_v3"}));
  app.add_option("--dense-layers", s.dense_layers, "deepseek_v3: dense layers first (default 3)");
  app.add_option("--layers", s.layers);
  app.add_option("--hidden", s.hidden);
  app.add_option("--heads", s.heads);
  app.add_option("--kv-heads", s.kv_heads);
  app.add_option("--head-dim", s.head_dim);
  app.add_option("--experts", s.experts);
  app.add_option("--top-k", s.top_k);
  app.add_option("--moe-intermediate", s.moe_intermediate);
  app.add_option("--vocab", s.vocab);
  app.add_flag("--fused-experts", s.fused_experts);
  app.add_option("--seed", s.seed);
  app.add_option("--dtype", dtype)->check(CLI::IsMember({"bf16", "f16", "f32"}));
  app.add_option("--shard-gb", shard_gb);
  CLI11_PARSE(app, argc, argv);
  s.dtype = dtype == "bf16" ? fp4kit::DType::BF16
                            : (dtype == "f16" ? fp4kit::DType::F16 : fp4kit::DType::F32);
  s.max_shard_bytes = static_cast<uint64_t>(shard_gb * 1e9);
  try {
    const uint64_t params = fp4kit::write_synthetic_moe(dir, s);
    fmt::print("{} parameters written to {}\n", params, dir);
  } catch (const fp4kit::Error& e) {
    fmt::print(stderr, "fp4kit-synth: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
