// compressed-tensors pack-quantized sources: the config's schemes, each weight resolved against
// them, and the decode (numeric/source_formats does the arithmetic).
#include "fp4kit/model/packed_int.hpp"

#include <fmt/format.h>

#include <cstring>
#include <deque>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/source_formats.hpp"

namespace fp4kit {
namespace {

using json = nlohmann::json;

// quantization_config (or the older compression_config) at the top level, else in text_config
// (Kimi-K2.5 keeps it there); null when neither says compressed-tensors.
const json* compressed_tensors_config(const json& config, std::string& where) {
  if (!config.is_object()) return nullptr;
  auto look = [&](const json& at, const std::string& prefix) -> const json* {
    for (const char* key : {"quantization_config", "compression_config"}) {
      auto q = at.find(key);
      if (q == at.end() || !q->is_object()) continue;
      auto m = q->find("quant_method");
      if (m != q->end() && m->is_string() && *m == "compressed-tensors") {
        where = prefix + key;
        return &*q;
      }
    }
    return nullptr;
  };
  if (const json* q = look(config, "")) return q;
  auto tc = config.find("text_config");
  if (tc != config.end() && tc->is_object()) return look(*tc, "text_config.");
  return nullptr;
}

std::string text_of(const json& j) { return j.dump(); }

}  // namespace

std::vector<PackedIntScheme> packed_int_schemes(const json& config, const std::string& label) {
  std::string where;
  const json* q = compressed_tensors_config(config, where);
  if (!q) return {};
  const std::string format = q->value("format", std::string());
  auto groups = q->find("config_groups");
  if (groups == q->end() || !groups->is_object()) return {};
  std::vector<PackedIntScheme> out;
  for (auto it = groups->begin(); it != groups->end(); ++it) {
    const json& g = it.value();
    if (!g.is_object()) continue;
    const std::string gformat =
        g.contains("format") && g["format"].is_string() ? g["format"].get<std::string>() : format;
    if (gformat != "pack-quantized") continue;
    const std::string key = fmt::format("{}.config_groups.{}.weights", where, it.key());
    auto w = g.find("weights");
    if (w == g.end() || !w->is_object())
      throw Error(fmt::format("{}: {} is missing: a pack-quantized group without a weight scheme",
                              label, key));
    auto refuse = [&](const std::string& what) {
      throw Error(fmt::format("{}: {}: {}; fp4kit reads pack-quantized weights that are type "
                              "int, symmetric, strategy group or channel, num_bits 4 or 8",
                              label, key, what));
    };
    const std::string type = w->value("type", std::string("int"));
    if (type != "int") refuse("type " + text_of((*w)["type"]));
    if (!w->value("symmetric", true))
      refuse("symmetric false (asymmetric weights with zero points are not read)");
    const json bits_j = w->value("num_bits", json(nullptr));
    if (!bits_j.is_number_integer() || !packed_int_bits_supported(bits_j.get<int>()))
      refuse("num_bits " + text_of(bits_j));
    const std::string strategy = w->value("strategy", std::string());
    PackedIntScheme s;
    s.bits = bits_j.get<int>();
    s.name = it.key();
    if (strategy == "group") {
      const json gs = w->value("group_size", json(nullptr));
      if (!gs.is_number_integer() || gs.get<int64_t>() <= 0)
        refuse("strategy group with group_size " + text_of(gs));
      s.group_size = gs.get<uint64_t>();
    } else if (strategy != "channel") {
      refuse("strategy " + text_of(w->value("strategy", json(nullptr))));
    }
    const json actorder = w->value("actorder", json(nullptr));
    if (actorder.is_string() && actorder == "group")
      refuse("actorder group (columns permuted by weight_g_idx are not read)");
    out.push_back(s);
  }
  return out;
}

PackedIntWeight resolve_packed_int(const std::string& m, const std::vector<PackedIntScheme>& schemes,
                                   const PackedIntLookup& lookup, const std::string& label) {
  PackedIntWeight w;
  w.module = m;
  w.packed = m + ".weight_packed";
  w.scale = m + ".weight_scale";
  w.shape_tensor = m + ".weight_shape";
  const TensorMeta* p = lookup.meta(w.packed);
  if (!p || p->dtype != DType::I32 || p->shape.size() != 2)
    throw Error(fmt::format("{}: {} must be an I32 [n, packed columns] tensor", label, w.packed));
  if (schemes.empty())
    throw Error(fmt::format("{}: {} is an I32 weight_packed but config.json has no "
                            "compressed-tensors quantization_config with format pack-quantized "
                            "saying how it is packed", label, w.packed));
  for (const char* extra : {".weight_zero_point", ".weight_g_idx"})
    if (lookup.meta(m + extra))
      throw Error(fmt::format("{}: {}{} is present: asymmetric (zero point) or activation-ordered "
                              "(g_idx) pack-quantized weights are not read", label, m, extra));
  const TensorMeta* s = lookup.meta(w.scale);
  if (!s)
    throw Error(fmt::format("{}: {} has no scale tensor {}", label, w.packed, w.scale));
  const TensorMeta* sh = lookup.meta(w.shape_tensor);
  if (!sh || (sh->dtype != DType::I32 && sh->dtype != DType::I64) || sh->numel() != 2)
    throw Error(fmt::format("{}: {} needs {} (I32/I64, 2 values: rows and columns)", label,
                            w.packed, w.shape_tensor));
  const std::vector<int64_t> nk = lookup.values(w.shape_tensor);
  if (nk.size() != 2 || nk[0] <= 0 || nk[1] <= 0 || static_cast<uint64_t>(nk[0]) != p->shape[0])
    throw Error(fmt::format("{}: {} = [{}] does not describe the {} rows of {}", label,
                            w.shape_tensor, fmt::join(nk, ", "), p->shape[0], w.packed));
  w.rows = static_cast<uint64_t>(nk[0]);
  w.cols = static_cast<uint64_t>(nk[1]);
  if (s->shape.size() != 2 || s->shape[0] != w.rows)
    throw Error(fmt::format("{}: {} must be [{}, groups]", label, w.scale, w.rows));
  std::string tried;
  for (const PackedIntScheme& sc : schemes) {
    const uint64_t group = sc.group_size == 0 ? w.cols : sc.group_size;
    const uint64_t words = (w.cols * static_cast<uint64_t>(sc.bits) + 31) / 32;
    const uint64_t groups = (w.cols + group - 1) / group;
    if (p->shape[1] == words && s->shape[1] == groups) {
      w.bits = sc.bits;
      w.group = group;
      w.channel = sc.group_size == 0;
      w.stored_bytes = p->nbytes() + s->nbytes();
      w.scale_meta = *s;
      w.shape_meta = *sh;
      return w;
    }
    tried += fmt::format("{}{} ({} bits, {}: [{}, {}] words, [{}, {}] scales)", tried.empty() ? "" : "; ",
                         sc.name, sc.bits,
                         sc.group_size ? fmt::format("group {}", sc.group_size) : "channel", w.rows,
                         words, w.rows, groups);
  }
  throw Error(fmt::format("{}: {} [{}, {}] with {} [{}] for a [{}, {}] weight matches no "
                          "pack-quantized scheme of config.json: {}", label, w.packed,
                          p->shape[0], p->shape[1], w.scale, fmt::join(s->shape, ", "), w.rows,
                          w.cols, tried));
}

std::vector<int64_t> small_int_values(const Checkpoint& ckpt, const std::string& name) {
  const TensorInfo& i = ckpt.info(name);
  if (i.dtype != DType::I32 && i.dtype != DType::I64)
    throw Error(fmt::format("{}: tensor {} is {}, expected I32 or I64", ckpt.dir().string(), name,
                            dtype_name(i.dtype)));
  const auto bytes = ckpt.bytes(name);
  const size_t es = dtype_size(i.dtype);
  std::vector<int64_t> v;
  for (size_t at = 0; at + es <= bytes.size(); at += es) {
    if (i.dtype == DType::I32) {
      int32_t x;
      std::memcpy(&x, bytes.data() + at, 4);
      v.push_back(x);
    } else {
      int64_t x;
      std::memcpy(&x, bytes.data() + at, 8);
      v.push_back(x);
    }
  }
  return v;
}

bool is_packed_int(const Checkpoint& ckpt, const std::string& m) {
  const std::string p = m + ".weight_packed";
  return ckpt.has(p) && ckpt.info(p).dtype == DType::I32;
}

PackedIntWeight packed_int_weight(const Checkpoint& ckpt, const std::string& m) {
  // Schemes are parsed per call: a handful of JSON lookups next to decoding a whole weight.
  const std::string label = (ckpt.dir() / "config.json").string();
  const auto schemes = packed_int_schemes(ckpt.config(), label);
  std::deque<TensorMeta> metas;  // the lookup's answers; a deque keeps their addresses
  PackedIntLookup lookup;
  lookup.meta = [&](const std::string& name) -> const TensorMeta* {
    if (!ckpt.has(name)) return nullptr;
    const TensorInfo& i = ckpt.info(name);
    metas.push_back({i.name, i.dtype, i.shape});
    return &metas.back();
  };
  lookup.values = [&](const std::string& name) { return small_int_values(ckpt, name); };
  return resolve_packed_int(m, schemes, lookup, ckpt.dir().string());
}

void decode_packed_int(const Checkpoint& ckpt, const PackedIntWeight& w, uint64_t row_begin,
                       uint64_t rows, float* out) {
  const TensorInfo& s = ckpt.info(w.scale);
  PackedIntScales grid;
  grid.data = ckpt.bytes(w.scale).data();
  grid.dtype = s.dtype;
  grid.grid_rows = s.shape.at(0);
  grid.grid_cols = s.shape.at(1);
  grid.group = w.group;
  packed_int_dequantize(ckpt.bytes(w.packed).data(), row_begin, rows, w.rows, w.cols, w.bits, grid,
                        out, w.packed, w.scale);
}

}  // namespace fp4kit
