#pragma once
// The checks that need only the checkpoint itself (spec section 9, items 1-8).
#include <cstdint>
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/verify/findings.hpp"
#include "fp4kit/verify/inventory.hpp"
#include "fp4kit/verify/quant_config.hpp"
#include "fp4kit/verify/verify.hpp"

namespace fp4kit::verify {

// What the structural pass learnt about one quantized module, for the numeric pass.
struct ModuleScales {
  float s2 = 0;            // weight_scale_2 (format B: 1 / weight_global_scale)
  bool s2_valid = false;   // finite and > 0
  bool scales_valid = false;  // weight_scale present with dtype F8_E4M3/U8 and shape [N, K/16]
                              // (BMM: [E, K/16, N])
  bool bmm = false;           // ModelOpt's 3-D BMM expert layout "<m>" U8 [E, K/2, N]
  uint64_t zero_scales = 0;              // block-scale bytes equal to 0x00
  std::vector<uint64_t> zero_positions;  // their flat indices r * (K/16) + b (first few)
};

inline constexpr size_t kMaxZeroPositions = 4096;

// Runs every structural check, fills the counts of `report` and returns one ModuleScales per
// module of `mods` (meaningful for quantized ones).
std::vector<ModuleScales> run_structural_checks(const Checkpoint& ckpt, const DeclaredQuant& declared,
                                                const std::vector<ModuleTensors>& mods,
                                                int64_t config_num_experts, Findings& out,
                                                VerifyReport& report);

}  // namespace fp4kit::verify
