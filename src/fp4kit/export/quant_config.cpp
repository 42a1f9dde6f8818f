#include "fp4kit/export/quant_config.hpp"

namespace fp4kit {

namespace {
using ojson = nlohmann::ordered_json;

ojson producer() { return {{"name", "fp4kit"}, {"version", FP4KIT_VERSION}}; }

ojson exclude_list(const Plan& plan) {
  ojson list = ojson::array();
  for (const auto& m : plan.exclude_modules) list.push_back(m);
  return list;
}

ojson modelopt_config(const Plan& plan, const QuantOptions& o) {
  ojson weights = {{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", 16}};
  ojson group = {{"targets", ojson::array({"Linear"})}, {"weights", weights}};
  if (!o.weights_only) group["input_activations"] = weights;
  return {{"quant_method", "modelopt"},
          {"quant_algo", o.weights_only ? "W4A16_NVFP4" : "NVFP4"},
          {"config_groups", {{"group_0", group}}},
          {"ignore", exclude_list(plan)},
          {"producer", producer()}};
}

ojson compressed_tensors_config(const Plan& plan, const QuantOptions& o) {
  ojson weights = {{"num_bits", 4},         {"type", "float"},          {"symmetric", true},
                   {"strategy", "tensor_group"}, {"group_size", 16}, {"dynamic", false}};
  ojson inputs = nullptr;
  if (!o.weights_only) {
    inputs = weights;
    inputs["dynamic"] = "local";
  }
  ojson group = {{"targets", ojson::array({"Linear"})},
                 {"format", "nvfp4-pack-quantized"},
                 {"weights", weights},
                 {"input_activations", inputs}};
  return {{"quant_method", "compressed-tensors"},
          {"format", "nvfp4-pack-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups", {{"group_0", group}}},
          {"ignore", exclude_list(plan)},
          {"kv_cache_scheme", nullptr}};
}
}  // namespace

nlohmann::ordered_json quantization_config(const Plan& plan, const QuantOptions& options) {
  return options.format == OutputFormat::ModelOpt ? modelopt_config(plan, options)
                                                  : compressed_tensors_config(plan, options);
}

nlohmann::ordered_json hf_quant_config(const Plan& plan, const QuantOptions& options) {
  return {{"producer", producer()},
          {"quantization",
           {{"quant_algo", options.weights_only ? "W4A16_NVFP4" : "NVFP4"},
            {"kv_cache_quant_algo", nullptr},
            {"group_size", 16},
            {"exclude_modules", exclude_list(plan)}}}};
}

}  // namespace fp4kit
