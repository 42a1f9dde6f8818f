#pragma once
// verify --source for ModelOpt's 3-D BMM experts (gpt-oss, Llama-4; spec section 4): output "<m>"
// U8 [E, K/2, N] + "<m>_weight_scale" [E, K/16, N] + one scalar "<m>_weight_scale_2", compared
// expert by expert with the source "<m>" [E, K, N] (BF16/F16/F32; expert e's matrix is source[e]
// transposed, [N, K]) or the MXFP4 pair "<m>_blocks" [E, N, K/32, 16] + "<m>_scales" [E, N, K/32]
// (already [N, K] per expert). One expert's float32 matrix in memory at a time.
#include <set>
#include <string>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/verify/findings.hpp"
#include "fp4kit/verify/inventory.hpp"
#include "fp4kit/verify/structural_checks.hpp"
#include "fp4kit/verify/verify.hpp"

namespace fp4kit::verify {

// Compares module `m` (ms.bmm) with its source, adds one row to report.tensor_errors (aggregate
// over experts) and findings naming the tensor and the expert; inserts the source tensors it
// read into `covered`.
void compare_bmm_module(const Checkpoint& ckpt, const Checkpoint& source, const ModuleTensors& m,
                        const ModuleScales& ms, double max_rel_rmse, Findings& out,
                        VerifyReport& report, std::set<std::string>& covered);

}  // namespace fp4kit::verify
