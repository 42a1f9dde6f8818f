#pragma once
// The tiny synthetic Qwen3-MoE checkpoint the CLI tests quantize: 2 layers, 4 experts, hidden 64,
// every K a multiple of 16, so each test runs in milliseconds.
#include "fp4kit/model/synthetic_checkpoint.hpp"

namespace fp4kit::testing {

inline SyntheticMoeSpec small_moe_spec() {
  SyntheticMoeSpec s;
  s.layers = 2;
  s.hidden = 64;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 32;
  s.experts = 4;
  s.moe_intermediate = 32;
  s.vocab = 128;
  return s;
}

}  // namespace fp4kit::testing
