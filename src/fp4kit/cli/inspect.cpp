// fp4kit inspect DIR [--json]: what a checkpoint holds (tensors, dtypes, model family, config
// summary, quantization config) without loading any weights.
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/cli/jobs.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/json_output.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/model/packed_int.hpp"

namespace fp4kit::cli {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct InspectOptions {
  std::string dir;
  bool as_json = false;
};

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024.0 && u < 4) v /= 1024.0, ++u;
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.2f} {}", v, units[u]);
}

// Quantization configs a checkpoint may already carry: transformers' quantization_config in
// config.json (compressed-tensors, modelopt, fp8, gptq, awq, ...) and ModelOpt's
// hf_quant_config.json.
json detect_quantization(const Checkpoint& ck) {
  json found = json::array();
  if (auto qc = ck.config().find("quantization_config");
      qc != ck.config().end() && qc->is_object()) {
    json q = {{"source", "config.json quantization_config"}};
    for (const char* k : {"quant_method", "quant_algo", "format", "bits", "weight_block_size"})
      if (qc->contains(k)) q[k] = (*qc)[k];
    q["raw"] = *qc;
    found.push_back(q);
  }
  const fs::path hf = ck.dir() / "hf_quant_config.json";
  std::error_code ec;
  if (fs::is_regular_file(hf, ec)) {
    json doc;
    try {
      std::ifstream in(hf);
      doc = json::parse(in);
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}: invalid JSON: {}", hf.string(), e.what()));
    }
    json q = {{"source", "hf_quant_config.json"}};
    if (doc.contains("producer") && doc["producer"].is_object() &&
        doc["producer"].contains("name"))
      q["producer"] = doc["producer"]["name"];  // who wrote it (modelopt, fp4kit), not a method
    if (doc.contains("quantization") && doc["quantization"].is_object())
      for (const char* k : {"quant_algo", "kv_cache_quant_algo", "group_size"})
        if (doc["quantization"].contains(k)) q[k] = doc["quantization"][k];
    q["raw"] = doc;
    found.push_back(q);
  }
  return found;
}

json model_summary(const Checkpoint& ck) {
  if (!ck.has_config()) return nullptr;
  const ModelConfig c = ModelConfig::parse(ck.config(), (ck.dir() / "config.json").string());
  return {{"model_type", c.model_type},
          {"outer_model_type", c.outer_model_type},
          {"architectures", c.architectures},
          {"num_hidden_layers", c.num_hidden_layers},
          {"hidden_size", c.hidden_size},
          {"num_experts", c.num_experts},
          {"num_experts_per_tok", c.num_experts_per_tok},
          {"dtype", c.dtype}};
}

// A weight stored as codes plus scale tensors, seen as the matrix it encodes.
struct EncodedWeight {
  std::string name;         // the logical weight (e.g. "<experts>.gate_up_proj")
  std::string format;       // "MXFP4", "FP8_BLOCK", "INT_PACKED", "NVFP4"
  std::string description;  // what a person reads, e.g. "MXFP4 (E2M1, E8M0 scales per 32)"
  std::vector<uint64_t> logical_shape;
  std::string codes, scales;  // the two tensors
};

// Finds the quantized weight encodings by their tensor names, dtypes and shapes (NVFP4-SPEC
// sections 4-6 and 8), so a source in MXFP4 or FP8 shows the matrices quantize will decode:
//  - MXFP4 (gpt-oss): "<m>_blocks" U8 [..., G, 16] + "<m>_scales" U8 [..., G] -> [..., 32 G]
//  - FP8 block-scaled (DeepSeek-V3, Qwen3-FP8): "<m>.weight" F8_E4M3 [n, k] +
//    "<m>.weight_scale_inv" [ceil(n/bn), ceil(k/bk)] -> [n, k]
//  - compressed-tensors pack-quantized INT4/INT8: "<m>.weight_packed" I32 + "<m>.weight_scale"
//    (+ "<m>.weight_shape") -> [n, k] (model/packed_int.hpp)
//  - NVFP4: "<m>.weight" / "<m>.weight_packed" U8 [N, K/2] + "<m>.weight_scale" [N, K/16]
//    -> [N, K]; ModelOpt's 3-D BMM experts "<m>" U8 [E, K/2, N] + "<m>_weight_scale"
//    [E, K/16, N] -> [E, K, N]
std::vector<EncodedWeight> find_encodings(const Checkpoint& ck) {
  std::vector<EncodedWeight> found;
  auto has = [&](const std::string& n, DType d) { return ck.has(n) && ck.info(n).dtype == d; };
  std::string fp8_block = "128x128";  // the default the quantizer assumes
  if (const auto qc = ck.config().find("quantization_config");
      qc != ck.config().end() && qc->is_object()) {
    const auto b = qc->find("weight_block_size");
    if (b != qc->end() && b->is_array() && b->size() == 2 && (*b)[0].is_number_unsigned() &&
        (*b)[1].is_number_unsigned())
      fp8_block = fmt::format("{}x{}", (*b)[0].get<uint64_t>(), (*b)[1].get<uint64_t>());
  }
  for (const auto& name : ck.tensor_names()) {
    const TensorInfo& t = ck.info(name);
    const auto& s = t.shape;
    if (name.ends_with("_blocks") && t.dtype == DType::U8 && s.size() >= 2 && s.back() == 16) {
      const std::string base = name.substr(0, name.size() - 7);
      const std::vector<uint64_t> want(s.begin(), s.end() - 1);
      if (has(base + "_scales", DType::U8) && ck.info(base + "_scales").shape == want) {
        std::vector<uint64_t> logical(s.begin(), s.end() - 1);
        logical.back() *= 32;
        found.push_back({base, "MXFP4", "MXFP4 (E2M1, E8M0 scales per 32)", logical, name,
                         base + "_scales"});
      }
      continue;
    }
    if (t.dtype == DType::F8_E4M3 && s.size() == 2 && name.ends_with(".weight") &&
        ck.has(name + "_scale_inv") && ck.info(name + "_scale_inv").shape.size() == 2) {
      found.push_back({name, "FP8_BLOCK",
                       fmt::format("FP8 E4M3 (block-scaled {}, scale_inv)", fp8_block), s, name,
                       name + "_scale_inv"});
      continue;
    }
    if (t.dtype == DType::I32 && name.ends_with(".weight_packed")) {
      // compressed-tensors pack-quantized (Kimi-K2 Thinking / K2.5 experts): resolved as quantize
      // resolves it, so a scheme it cannot read fails here too, naming the rule.
      const std::string m = name.substr(0, name.size() - 14);
      const PackedIntWeight w = packed_int_weight(ck, m);
      found.push_back({m + ".weight", "INT_PACKED",
                       fmt::format("INT{} (compressed-tensors pack-quantized, {})", w.bits,
                                   w.channel ? std::string("a scale per row")
                                             : fmt::format("a scale per {} columns", w.group)),
                       {w.rows, w.cols}, name, w.scale});
      continue;
    }
    if (t.dtype != DType::U8 || s.size() < 2) continue;
    const bool packed_2d = s.size() == 2 && (name.ends_with(".weight") || name.ends_with(".weight_packed"));
    if (packed_2d) {
      const std::string scale = name.substr(0, name.rfind('.')) + ".weight_scale";
      if (ck.has(scale) && ck.info(scale).shape == std::vector<uint64_t>{s[0], s[1] * 2 / 16})
        found.push_back({name.substr(0, name.rfind('.')), "NVFP4",
                         "NVFP4 (E2M1, E4M3 scales per 16)", {s[0], 2 * s[1]}, name, scale});
    } else if (s.size() == 3) {
      const std::string scale = name + "_weight_scale";
      if (ck.has(scale) && ck.info(scale).shape == std::vector<uint64_t>{s[0], s[1] * 2 / 16, s[2]})
        found.push_back({name, "NVFP4", "NVFP4 (E2M1, E4M3 scales per 16; 3-D BMM experts)",
                         {s[0], 2 * s[1], s[2]}, name, scale});
    }
  }
  return found;
}

json build_report(const Checkpoint& ck) {
  json r;
  r["path"] = ck.dir().string();
  r["shards"] = json::array();
  for (const auto& s : ck.shards()) r["shards"].push_back(s->path().filename().string());
  r["tensors"] = json::array();
  const auto encodings = find_encodings(ck);
  std::map<std::string, json> encoding_of;  // tensor -> its part in an encoded weight
  r["encoded_weights"] = json::array();
  for (const auto& e : encodings) {
    r["encoded_weights"].push_back({{"name", e.name},
                                    {"format", e.format},
                                    {"description", e.description},
                                    {"logical_shape", e.logical_shape},
                                    {"codes", e.codes},
                                    {"scales", e.scales}});
    for (const auto& [tensor, part] : {std::pair{e.codes, "codes"}, std::pair{e.scales, "scales"}})
      encoding_of[tensor] = {{"format", e.format},
                             {"description", e.description},
                             {"part", part},
                             {"weight", e.name},
                             {"logical_shape", e.logical_shape}};
  }
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_dtype;  // count, bytes
  for (const auto& name : ck.tensor_names()) {
    const TensorInfo& t = ck.info(name);
    r["tensors"].push_back({{"name", name},
                            {"dtype", std::string(dtype_name(t.dtype))},
                            {"shape", t.shape},
                            {"bytes", t.nbytes()},
                            {"shard", ck.file_of(name).path().filename().string()}});
    if (const auto it = encoding_of.find(name); it != encoding_of.end())
      r["tensors"].back()["encoding"] = it->second;
    auto& d = by_dtype[std::string(dtype_name(t.dtype))];
    d.first += 1;
    d.second += t.nbytes();
  }
  r["totals_by_dtype"] = json::object();
  for (const auto& [dt, v] : by_dtype)
    r["totals_by_dtype"][dt] = {{"tensors", v.first}, {"bytes", v.second}};
  r["total_tensors"] = ck.tensor_names().size();
  r["total_bytes"] = ck.total_bytes();
  r["model"] = model_summary(ck);
  r["quantization"] = detect_quantization(ck);
  r["sidecar_files"] = json::array();
  for (const auto& p : ck.sidecar_files()) r["sidecar_files"].push_back(p.generic_string());
  r["metadata"] = ck.shards().empty() ? json::object() : json(ck.shards()[0]->metadata());
  return r;
}

std::string or_none(const std::string& s) { return s.empty() ? "(none)" : s; }

void print_text(const json& r) {
  fmt::print("checkpoint: {}\n", r["path"].get<std::string>());
  fmt::print("shards: {}\n", r["shards"].size());
  fmt::print("tensors: {}, {} ({} bytes)\n", r["total_tensors"].get<uint64_t>(),
             human_bytes(r["total_bytes"].get<uint64_t>()), r["total_bytes"].get<uint64_t>());

  const json& m = r["model"];
  if (m.is_null()) {
    fmt::print("model: (no config.json)\n");
  } else {
    std::vector<std::string> archs = m["architectures"].get<std::vector<std::string>>();
    fmt::print("model: model_type {}", or_none(m["model_type"].get<std::string>()));
    if (m["outer_model_type"] != m["model_type"])
      fmt::print(" (inside {})", or_none(m["outer_model_type"].get<std::string>()));
    fmt::print(", architectures {}\n", archs.empty() ? "(none)" : fmt::format("{}", fmt::join(archs, ",")));
    fmt::print("  layers {}, hidden {}, experts {}", m["num_hidden_layers"].get<int64_t>(),
               m["hidden_size"].get<int64_t>(), m["num_experts"].get<int64_t>());
    if (m["num_experts"].get<int64_t>() > 0)
      fmt::print(" ({} per token)", m["num_experts_per_tok"].get<int64_t>());
    fmt::print(", dtype {}\n", or_none(m["dtype"].get<std::string>()));
  }

  if (r["quantization"].empty()) fmt::print("quantization: none\n");
  for (const json& q : r["quantization"]) {
    fmt::print("quantization ({}):", q["source"].get<std::string>());
    for (const char* k : {"quant_method", "producer", "quant_algo", "format", "kv_cache_quant_algo"})
      if (q.contains(k)) fmt::print(" {}={}", k, q[k].is_string() ? q[k].get<std::string>() : q[k].dump());
    fmt::print("\n");
  }

  fmt::print("\ntotals by dtype:\n");
  for (const auto& [dt, v] : r["totals_by_dtype"].items())
    fmt::print("  {:<8} {:>8} tensors {:>16} bytes  {}\n", dt, v["tensors"].get<uint64_t>(),
               v["bytes"].get<uint64_t>(), human_bytes(v["bytes"].get<uint64_t>()));

  auto shape_of = [](const json& v) {
    return fmt::format("[{}]", fmt::join(v.get<std::vector<uint64_t>>(), ","));
  };
  if (!r["encoded_weights"].empty()) {
    fmt::print("\nencoded weights ({}):\n", r["encoded_weights"].size());
    size_t w = 4;
    for (const json& e : r["encoded_weights"]) w = std::max(w, e["name"].get_ref<const std::string&>().size());
    for (const json& e : r["encoded_weights"])
      fmt::print("  {:<{}}  {:<16} {}  ({} + {})\n", e["name"].get<std::string>(), w,
                 shape_of(e["logical_shape"]), e["description"].get<std::string>(),
                 e["codes"].get<std::string>(), e["scales"].get<std::string>());
  }

  size_t wname = 4, wshape = 5;
  std::vector<std::string> shapes;
  for (const json& t : r["tensors"]) {
    shapes.push_back(fmt::format("[{}]", fmt::join(t["shape"].get<std::vector<uint64_t>>(), ",")));
    wname = std::max(wname, t["name"].get_ref<const std::string&>().size());
    wshape = std::max(wshape, shapes.back().size());
  }
  fmt::print("\n{:<{}}  {:<8} {:<{}} {:>14}  {}\n", "name", wname, "dtype", "shape", wshape, "bytes",
             "shard");
  size_t i = 0;
  for (const json& t : r["tensors"]) {
    // Codes and scales of an encoded weight say so after the shard: "MXFP4 (...) codes of [E, N, K]".
    std::string note;
    if (t.contains("encoding"))
      note = fmt::format("  {} {} of {}", t["encoding"]["description"].get<std::string>(),
                         t["encoding"]["part"].get<std::string>(), shape_of(t["encoding"]["logical_shape"]));
    fmt::print("{:<{}}  {:<8} {:<{}} {:>14}  {}{}\n", t["name"].get<std::string>(), wname,
               t["dtype"].get<std::string>(), shapes[i++], wshape, t["bytes"].get<uint64_t>(),
               t["shard"].get<std::string>(), note);
  }

  if (!r["sidecar_files"].empty()) {
    fmt::print("\nsidecar files ({}):\n", r["sidecar_files"].size());
    for (const json& s : r["sidecar_files"]) fmt::print("  {}\n", s.get<std::string>());
  }
}

}  // namespace

nlohmann::json inspect_report(const std::string& dir) { return build_report(*Checkpoint::open(dir)); }

Command add_inspect(CLI::App& app) {
  auto opts = std::make_shared<InspectOptions>();
  auto* sub = app.add_subcommand(
      "inspect", "List a checkpoint's tensors, dtypes, model family and quantization config");
  sub->add_option("DIR", opts->dir, "checkpoint directory (or one .safetensors file)")->required();
  sub->add_flag("--json", opts->as_json, "print one JSON document for machines");
  return {sub, [opts]() -> int {
            const json report = inspect_report(opts->dir);
            if (opts->as_json)
              fmt::print("{}\n", json_text(report));
            else
              print_text(report);
            return 0;
          }};
}

}  // namespace fp4kit::cli
