#include "fp4kit/export/output_layout.hpp"

#include <algorithm>
#include <numeric>

#include <fmt/core.h>

#include "fp4kit/error.hpp"

namespace fp4kit {

std::vector<OutputTensor> output_layout(const Plan& plan, const Checkpoint& source,
                                        const QuantOptions& options) {
  std::vector<size_t> order(plan.entries.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return plan.entries[a].name < plan.entries[b].name;
  });
  const bool b = options.format == OutputFormat::CompressedTensors;
  const std::vector<uint64_t> global_shape = b ? std::vector<uint64_t>{1} : std::vector<uint64_t>{};

  std::vector<OutputTensor> out;
  for (size_t i : order) {
    const PlanEntry& e = plan.entries[i];
    if (e.action == Action::Drop) continue;
    if (e.action == Action::Keep) {
      const TensorInfo& info = source.info(e.source.tensor);
      out.push_back({{e.name, info.dtype, info.shape}, i, OutputPart::Copy});
      continue;
    }
    if (e.action == Action::Dequantize) {  // an FP8 source kept unquantized: BF16, same shape
      const TensorInfo& info = source.info(e.source.tensor);
      const std::vector<uint64_t> shape =
          e.bmm_experts > 0 ? std::vector<uint64_t>{e.bmm_experts, e.cols, e.rows}  // MXFP4
          : e.encoding == SourceEncoding::PackedInt ? std::vector<uint64_t>{e.rows, e.cols}
                                                    : info.shape;
      out.push_back({{e.name, DType::BF16, shape}, i, OutputPart::Dequantized});
      continue;
    }
    const std::string& m = e.name;
    if (e.bmm_experts > 0) {
      // Spec 4: ModelOpt's 3-D layout, names joined with '_'. compressed-tensors has no 3-D NVFP4
      // layout (llm-compressor splits such experts into per-expert Linears first), and vLLM's
      // gpt-oss loader reads neither: refuse rather than write something no loader reads.
      if (b)
        throw Error(fmt::format(
            "--format compressed-tensors: '{}' is a 3-D BMM expert tensor ({}); compressed-tensors "
            "has no 3-D NVFP4 layout and the gpt-oss / Llama-4 loaders read BMM experts only in "
            "ModelOpt's format: use --format modelopt (the default)",
            m, role_name(e.role)));
      const uint64_t E = e.bmm_experts, n = e.rows, k = e.cols;
      if (!options.weights_only)
        out.push_back({{m + "_input_scale", DType::F32, {}}, i, OutputPart::InputScale});
      out.push_back({{m + "_weight_scale_2", DType::F32, {}}, i, OutputPart::GlobalScale});
      out.push_back({{m, DType::U8, {E, k / 2, n}}, i, OutputPart::Weight});
      out.push_back({{m + "_weight_scale", DType::F8_E4M3, {E, k / 16, n}}, i,
                     OutputPart::WeightScale});
      continue;
    }
    if (!options.weights_only)
      out.push_back({{m + (b ? ".input_global_scale" : ".input_scale"), DType::F32, global_shape},
                     i, OutputPart::InputScale});
    out.push_back({{m + (b ? ".weight_global_scale" : ".weight_scale_2"), DType::F32,
                    global_shape},
                   i, OutputPart::GlobalScale});
    out.push_back({{m + (b ? ".weight_packed" : ".weight"), DType::U8, {e.rows, e.cols / 2}}, i,
                   OutputPart::Weight});
    out.push_back({{m + ".weight_scale", DType::F8_E4M3, {e.rows, e.cols / 16}}, i,
                   OutputPart::WeightScale});
  }
  return out;
}

std::vector<TensorSpec> specs_of(const std::vector<OutputTensor>& layout) {
  std::vector<TensorSpec> specs;
  specs.reserve(layout.size());
  for (const auto& t : layout) specs.push_back(t.spec);
  return specs;
}

}  // namespace fp4kit
