#pragma once
// The plan: every output tensor's fate and the rule that decided it, fixed before any byte is
// written (llama-quantize's first pass). The stream executes it; --dry-run prints it.
#include <array>
#include <functional>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/model/tensor_meta.hpp"
#include "fp4kit/model/tensor_role.hpp"
#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

class Checkpoint;
struct ModelConfig;

enum class Action {
  Quantize,  // NVFP4: writes <module>.weight (+ scales); source may be a slice of a fused 3-D tensor
  Keep,      // copied byte for byte (excluded module, norm, embedding, bias, ...)
  Drop,      // not written (e.g. source-format scale tensors absorbed by dequantization)
  Dequantize,  // a kept tensor stored quantized in the source (FP8 block-scaled): written as BF16
               // with the same name and shape, never as raw codes without their scales
};
std::string_view action_name(Action a);

// How a source tensor's bytes encode its values (NVFP4-SPEC.md section 8).
inline constexpr uint64_t kMxfp4BlockSize = 32;  // values per E8M0 scale

enum class SourceEncoding {
  Plain,     // BF16 / F16 / F32: read element by element
  Fp8Block,  // F8_E4M3 codes times a 2-D block scale grid "<m>.weight_scale_inv" (DeepSeek-V3/R1,
             // Kimi-K2, Qwen3-FP8): decoded to float32 in the stream
  Mxfp4,     // gpt-oss "<m>_blocks" U8 [E, N, K/32, 16] (E2M1 pairs) + "<m>_scales" U8 [E, N, K/32]
             // (E8M0): decoded to float32 per expert in the stream
  PackedInt,  // compressed-tensors pack-quantized INT4/INT8 (Kimi-K2 Thinking / K2.5 experts):
              // "<m>.weight_packed" I32 + "<m>.weight_scale" (+ "<m>.weight_shape"), decoded to
              // float32 exactly (model/packed_int.hpp) in the stream
};

// Where a quantized weight's [rows, cols] values come from.
struct SourceSlice {
  std::string tensor;           // source tensor name
  int64_t expert = -1;          // index along dim 0 of a 3-D tensor, -1 for a 2-D tensor
  uint64_t row_begin = 0;       // row range inside the (expert's) 2-D matrix
  uint64_t row_end = 0;
};

struct PlanEntry {
  // For Quantize: the module name <m> (outputs <m>.weight, <m>.weight_scale, <m>.weight_scale_2,
  // <m>.input_scale). For Keep/Drop: the tensor name.
  std::string name;
  Action action = Action::Keep;
  std::string reason;           // the rule that decided it, e.g. "default: routed expert"
  Role role = Role::Other;
  int64_t layer = -1;
  int64_t expert = -1;
  SourceSlice source;           // Keep: source.tensor == name (or renamed); a fused 3-D expert
                                // tensor is either split into Quantize entries or kept whole
  DType source_dtype = DType::BF16;
  uint64_t rows = 0, cols = 0;  // Quantize: the 2-D weight shape [N, K]
  int64_t weight_group = -1;    // index into Plan::groups: members share weight_scale_2
  int64_t input_group = -1;     // index into Plan::groups: members share input_scale

  // Added by the plan builder (additive; the fields above keep their meaning):
  // - Quantize entries always have input_group >= 0 (a group of one for a lone linear);
  //   weight_group is -1 for a linear with its own s2 (o_proj, down_proj, ...).
  // - Quantize entries of routed experts have role ExpertGate/ExpertUp/ExpertDown whether the
  //   source is a per-expert 2-D tensor (source.expert == -1) or a slice of a fused 3-D tensor
  //   (source.expert == e, role of the 3-D tensor itself is FusedExpertGateUp/Down).
  std::vector<uint64_t> shape;  // the source tensor's full shape
  uint64_t source_bytes = 0;    // bytes read from the source for this entry (slice for experts)
  std::string source_scales;  // encoded sources: the scale tensor ("<m>.weight_scale_inv" of FP8,
                              // "<m>_scales" of MXFP4)
  // Quantize / Dequantize entries: how the source encodes its values. Fp8Block: source_scales
  // names the scale grid, fp8_block its block size (config quantization_config.weight_block_size,
  // default 128x128). Mxfp4: source.tensor is "<m>_blocks", source_scales "<m>_scales".
  SourceEncoding encoding = SourceEncoding::Plain;
  std::array<uint64_t, 2> fp8_block = {128, 128};
  // BMM 3-D experts (gpt-oss, Llama-4; spec 4): the number of experts E, else 0. The entry is the
  // whole tensor "<m>", E matrices of [rows, cols] = [N, K] each: the transpose of source[e]
  // ([E, K, N] on disk) for plain sources, the decoded blocks for MXFP4. Quantize writes it 3-D:
  // "<m>" U8 [E, K/2, N], "<m>_weight_scale" [E, K/16, N], ONE "<m>_weight_scale_2" (and
  // "<m>_input_scale"); Dequantize (a kept MXFP4 tensor) writes "<m>" BF16 [E, K, N].
  uint64_t bmm_experts = 0;
  // PackedInt: bits per integer and columns per scale (the module's [rows, cols] is the whole
  // matrix; source.tensor is "<m>.weight_packed", source_scales "<m>.weight_scale").
  int int_bits = 0;
  uint64_t int_group = 0;
};

struct FusionGroup {
  std::string name;                 // e.g. "model.layers.0.self_attn.qkv"
  std::string why;                  // e.g. "q/k/v read the same input (spec 3)"
  std::vector<size_t> members;      // indices into Plan::entries
  std::string kind;                 // "weight+input", "weight" (s2 only) or "input" (input_scale only)
};

struct Plan {
  std::string family;               // architecture table used ("qwen3_moe", "generic", ...)
  std::vector<PlanEntry> entries;   // in output order
  std::vector<FusionGroup> groups;  // weight groups and input groups
  // Module names kept unquantized that a loader must know about (checkpoint names, sorted),
  // for exclude_modules / ignore. Exact names (lm_head even when tied, embeddings, routers,
  // shared_expert_gate, K % 16 linears, linear_attn parts, MTP linears, a fused 3-D expert tensor
  // kept whole by its tensor name), plus one "<prefix>*" per vision tower when that wildcard
  // matches no quantized module. Checked by validate_exclude_list.
  std::vector<std::string> exclude_modules;
  std::vector<std::string> warnings;
  nlohmann::json to_json() const;
};

struct Rule {
  enum class Kind { Include, Exclude } kind = Kind::Exclude;
  std::string glob;        // fnmatch-style over module names (checkpoint names)
  std::string origin;      // "--exclude", "recipe.yaml:3", ...
};

struct PlanOptions {
  std::vector<Rule> rules;             // later wins (like ModelOpt's quant_cfg)
  bool quantize_linear_attn = false;   // Qwen3.5/3.6 / Qwen3-Next linear_attn in_proj_qkv/z, out_proj
  // Row length (K) a quantized linear needs: 16 (NVFP4 blocks) for the safetensors formats, 64
  // for GGUF (llama.cpp's block_nvfp4 holds 64 weights); `k_multiple_why` says so in the reason.
  uint64_t k_multiple = 16;
  std::string k_multiple_why;
};

// The integer values of a small I32/I64 tensor (compressed-tensors' "<m>.weight_shape"), for
// plans built from tensor lists.
using SmallTensorValues = std::function<std::vector<int64_t>(const std::string&)>;

// Builds and validates the plan. Throws fp4kit::Error listing every problem: a rule that matches
// nothing, tensors that must be quantized but have K % 16 != 0 (unless excluded explicitly),
// experts missing or inconsistent, unknown layouts.
Plan build_plan(const Checkpoint& ckpt, const ModelConfig& config, const PlanOptions& options);

// The same from a plain tensor list (what build_plan reads from the checkpoint's headers), so the
// planning logic is testable without files.
// Pack-quantized sources (model/packed_int.hpp) need `values` for their weight_shape tensors.
Plan build_plan_from_tensors(const std::vector<TensorMeta>& tensors, const ModelConfig& config,
                             const PlanOptions& options, const SmallTensorValues& values = {});

// What every decoder layer must hold (ArchFamily::complete_layers): layers 0..num_hidden_layers-1
// present, attention / MLA / dense MLP / shared expert complete where present, a router for
// routed experts, and (known families) a token mixer and an MLP in every layer. Throws
// fp4kit::Error listing each hole by the tensor name that is missing. build_plan runs it first;
// build_plan_from_tensors does not (rule tests describe partial models).
void check_layer_contents(const std::vector<TensorMeta>& tensors, const ModelConfig& config);
// Fails (fp4kit::Error listing them) when an exclude_modules pattern matches a quantized module.
void validate_exclude_list(const Plan& plan);

// Output bytes of an entry: NVFP4 = rows*cols/2 + rows*cols/16 + 4 (s2) + 4 (input_scale unless
// weights_only); Keep = source bytes; Dequantize = 2 bytes per element (BF16); Drop = 0.
uint64_t planned_output_bytes(const PlanEntry& e, bool weights_only = false);

// The --dry-run table: action, name, reason, shape, dtype, fusion group, bytes before/after,
// then totals and warnings.
std::string format_plan_table(const Plan& plan, bool weights_only = false);

}  // namespace fp4kit
