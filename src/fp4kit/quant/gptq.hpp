#pragma once
// GPTQ on NVFP4 with fixed block scales (issue 15; research note section 4.2): the block scales
// (max, mse or hessian, chosen on the original weights) and s2 stay as they are; the E2M1 codes
// are chosen column by column in the natural (static) order, each column's rounding error fed
// back into the columns after it through the upper Cholesky factor U of (H + damp)^-1, H = X^T X
// / tokens. Rows are independent given U, so each row runs the whole column loop on its own
// (threads over rows); that is the lazy-block algorithm's arithmetic without the batching.
// No g_idx: the stored layout is the standard one.
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/quant/source_view.hpp"

namespace fp4kit {

struct GptqOptions {
  double damp = 0.01;  // H += damp * mean(diag H) * I
};

// Re-encodes `packed` [rows, cols/2] for the given scales. xtx: [cols, cols] (sum over tokens).
// Returns "" on success, else why GPTQ was not applied (packed left as it was): a degenerate
// X^T X (no token, not positive definite after dampening).
std::string gptq_encode(const SourceView& v, float s2, const uint8_t* scales,
                        const std::vector<double>& xtx, const GptqOptions& options,
                        uint8_t* packed);

}  // namespace fp4kit
