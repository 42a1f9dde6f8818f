#pragma once
// input_scale per input group (W4A4), from calibration statistics: spec sections 2-3.
// Every member of a group gets act_amax = max of the members' input amax, so fused GEMMs and
// all routed experts of one layer see one value (ModelOpt once wrote none for idle experts and
// vLLM produced NaN).
#include <vector>

#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/quant_options.hpp"

namespace fp4kit {

// Result indexed like Plan::groups; groups that are not input groups hold 0. Throws fp4kit::Error
// listing every input group for which the stats hold no value (naming its members and the stats
// file), unless options.input_scale_fallback.
std::vector<float> compute_input_scales(const Plan& plan, const ActivationStats& stats,
                                        const QuantOptions& options,
                                        const std::string& stats_label);

// The stats must come from the model being quantized: its recorded source_fingerprint
// (checkpoint_fingerprint of the calibrated model) must equal `fingerprint`, and every input
// vector (input_sq_sum) of a quantized module must have the module's K entries. Throws
// fp4kit::Error naming the file and the rule; returns warnings (a file that records no
// fingerprint, statistics of modules this model does not have).
std::vector<std::string> check_stats_source(const Plan& plan, const ActivationStats& stats,
                                            const std::string& fingerprint,
                                            const std::string& stats_label);

}  // namespace fp4kit
