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

// Default rel-RMSE threshold. Correct round-to-nearest NVFP4 (spec section 2) was measured
// (tests/verify/threshold_test.cpp, BENCHMARKS.md "## Verify") at
//   real stories260k weights (35 linears x 5 models): rel-RMSE 0.0868 .. 0.1007
//   Gaussian N(0,1) 256x1024:                        0.0960
//   Student-t (3 d.o.f.) / Laplace 256x1024:         0.102 / 0.0994
//   heavy outliers (one value 1000x the rest):       0.1110
// A broken tensor is far worse: a wrong s2 or swapped nibbles gives 0.3 .. 1.4; BF16 truncation
// errors of a good tensor cannot move it. The threshold sits 2x above the worst correct
// measurement; a tensor above it is re-quantized from the source to tell a hard distribution
// (reference error also high) from a broken encoding.
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
