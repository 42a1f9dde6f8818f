#include "fp4kit/quant/block_scales.hpp"

#include <fmt/core.h>

#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_search.hpp"
#include "fp4kit/quant/code_store.hpp"
#include "fp4kit/quant/gptq.hpp"

namespace fp4kit {

const char* scale_method_name(ScaleMethod m) {
  switch (m) {
    case ScaleMethod::Max: return "max";
    case ScaleMethod::Mse: return "mse";
    case ScaleMethod::Hessian: return "hessian";
  }
  return "?";
}

namespace {

// H_j = (sum over tokens of x x^T) / tokens, as float32, or an empty vector with `why` set.
std::vector<float> hessian_of(const QuantOptions& o, const std::string& module, uint64_t cols,
                              std::string& why, std::string& detail) {
  if (!o.stats) {
    why = "no statistics";
    return {};
  }
  const auto it = o.stats->hessian_blocks.find(module);
  if (it == o.stats->hessian_blocks.end()) {
    why = "no Hessian statistics for this linear in the stats file";
    return {};
  }
  const auto tc = o.stats->token_count.find(module);
  const int64_t tokens = tc == o.stats->token_count.end() ? 0 : tc->second;
  if (tokens < o.hessian_min_tokens) {
    why = "too few calibration tokens (--hessian-min-tokens)";
    detail = fmt::format("{} tokens < {}", tokens, o.hessian_min_tokens);
    return {};
  }
  if (it->second.size() != cols * 16)
    throw Error(fmt::format("stats file: {}.input_hessian_blocks has {} values, the weight has "
                            "K = {} (expected K x 16)", module, it->second.size(), cols));
  std::vector<float> h(it->second.size());
  for (size_t i = 0; i < h.size(); ++i)
    h[i] = static_cast<float>(it->second[i] / static_cast<double>(tokens));
  return h;
}

ScaleOutcome encode_scales(const SourceView& v, float s2, const QuantOptions& o,
                           const std::string& module, uint8_t* packed, uint8_t* scales) {
  ScaleOutcome out;
  out.method = o.scales;
  if (o.scales == ScaleMethod::Max) {
    DistortionStats error;
    nvfp4_quantize_with_error(v.data, v.dtype, v.rows, v.cols, s2, packed, scales, error);
    out.error = error;
    return out;
  }
  std::vector<float> h;
  if (o.scales == ScaleMethod::Hessian) {
    h = hessian_of(o, module, v.cols, out.fallback, out.detail);
    if (h.empty()) out.method = ScaleMethod::Mse;
  }
  DistortionStats error;
  nvfp4_quantize_search(v.data, v.dtype, v.rows, v.cols, s2, ScaleSearch{h.empty() ? nullptr : h.data()},
                        packed, scales, &error);
  out.error = error;
  return out;
}

}  // namespace

ScaleOutcome encode_weight(const SourceView& v, float s2, const QuantOptions& o,
                           const std::string& module, uint8_t* packed, uint8_t* scales) {
  if (o.codes) {
    ScaleOutcome stored;
    if (o.codes->get(module, s2, v.rows * v.cols / 2, v.rows * v.cols / kNvfp4Block, packed,
                     scales, stored))
      return stored;
  }
  ScaleOutcome out = encode_scales(v, s2, o, module, packed, scales);
  if (!o.gptq) return out;
  const std::vector<double>* xtx = nullptr;
  if (o.stats) {
    const auto it = o.stats->xtx.find(module);
    if (it != o.stats->xtx.end()) xtx = &it->second;
  }
  if (!xtx) {
    out.gptq_fallback =
        o.codes ? "not in the engine's layer pass (outside the decoder layers, or 3-D experts)"
                : "no X^T X for this linear (no calibration token reached it, or the stats file "
                  "lacks it: calibrate --full-xtx)";
    return out;
  }
  out.gptq_fallback = gptq_encode(v, s2, scales, *xtx, GptqOptions{o.gptq_damp}, packed);
  out.gptq = out.gptq_fallback.empty();
  if (out.gptq) out.error.reset();  // GPTQ chose other codes
  return out;
}

}  // namespace fp4kit
