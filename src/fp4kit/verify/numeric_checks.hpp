#pragma once
// Compares every quantized tensor of an NVFP4 checkpoint with the unquantized source it was made
// from (verify --source): relative RMSE, SQNR, max abs error, sign flips, share rounded to zero.
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/verify/findings.hpp"
#include "fp4kit/verify/inventory.hpp"
#include "fp4kit/verify/structural_checks.hpp"
#include "fp4kit/verify/verify.hpp"

namespace fp4kit::verify {

// Default rel-RMSE threshold, from measurements (tests/verify/threshold_test.cpp prints them;
// BENCHMARKS.md "## Verify"). Correct round-to-nearest NVFP4 (spec section 2):
//   real stories260k weights, 395 matrices of 5 checkpoints:  rel-RMSE 0.0000 .. 0.1068
//   random 256x1024, bf16: Gaussian 0.0953, uniform 0.1019, Laplace 0.0927, Student-t(3)
//   0.0912, one 1000-sigma outlier 0.0435, int4 grid 0.1074 (all unchanged with a fusion
//   group's shared amax up to 64x the member's own)
//   adversarial blocks (one 6 and fifteen 5s, every 5 a tie rounding to 4): 0.1910
// Broken encodings of a Gaussian matrix: s2 of another group member (x1.5) 0.51, s2 x2 1.01,
// s2 / 2 0.50, nibbles swapped 1.42, another matrix's data (gate/up swapped) 1.42.
// 0.22 sits 2x above every realistic correct tensor, above the adversarial worst case, and 2.3x
// below the mildest broken one. A tensor above it is also re-quantized from the source, so a
// genuinely hard distribution (reference error as high) is a warning, not an error.
inline constexpr double kDefaultMaxRelRmse = 0.22;

// Where a quantized module's values come from in the source checkpoint.
struct SourceSlice {
  const TensorInfo* tensor = nullptr;
  uint64_t offset_elems = 0;  // start of the [rows, cols] matrix inside the source tensor
  uint64_t rows = 0, cols = 0;
};
// Finds module `m`'s source: "<m>.weight" 2-D, or a slice of a fused 3-D expert tensor
// ("<moe>.gate_up_proj" [E, 2I, H]: gate rows [0, I), up rows [I, 2I); "<moe>.down_proj"
// [E, H, I]). nullopt-like result (tensor == nullptr) with `why` set when not found.
SourceSlice find_source(const Checkpoint& source, const ModuleTensors& m, std::string& why);

void run_numeric_checks(const Checkpoint& ckpt, const Checkpoint& source,
                        const std::vector<ModuleTensors>& mods,
                        const std::vector<ModuleScales>& scales, double max_rel_rmse,
                        Findings& out, VerifyReport& report);

}  // namespace fp4kit::verify
