#include "fp4kit/export/gguf_export.hpp"

#include <fmt/core.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "fp4kit/error.hpp"
#include "fp4kit/export/async_writer.hpp"
#include "fp4kit/export/gguf_arch.hpp"
#include "fp4kit/export/gguf_tokenizer.hpp"
#include "fp4kit/io/gguf_file.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/ggml_nvfp4.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/plan/glob.hpp"

namespace fp4kit {

namespace {
namespace fs = std::filesystem;
constexpr size_t kNone = std::numeric_limits<size_t>::max();

std::string join_lines(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "\n  " + x;
  return s;
}

// The GGUF file under construction: pieces (one per source linear or tensor) land in GGUF
// tensors, experts of one layer and projection in one stacked tensor.
class GgufBuilder {
 public:
  GgufBuilder(GgufArch arch, const ModelConfig& config) : arch_(std::move(arch)), config_(config) {}

  // A linear written as NVFP4 ([rows, cols] weights).
  size_t add_nvfp4(const std::string& hf, uint64_t rows, uint64_t cols, bool input_scale) {
    Piece p = piece(hf, 2);
    if (p.target.values != GgufTarget::Values::Copy || p.target.squeeze)
      errors_.push_back(fmt::format("{}: llama.cpp needs it transformed in float32; it cannot be "
                                    "NVFP4 (plan error)",
                                    hf));
    p.nvfp4 = true, p.input_scale = input_scale, p.rows = rows, p.cols = cols;
    p.type = GgmlType::NVFP4;
    return push(std::move(p));
  }

  // A tensor written unquantized; `dtype` is what put_plain will be handed.
  // `as` (optional) writes it under another GGUF name (a tied embedding as output.weight).
  size_t add_plain(const std::string& hf, const std::vector<uint64_t>& shape, DType dtype,
                   const std::string& as = "") {
    Piece p = piece(hf, shape.size());
    if (!as.empty()) p.target = GgufTarget{}, p.target.name = as;
    p.shape = shape;
    p.dtype = dtype;
    p.cols = shape.empty() ? 1 : shape.back();
    p.rows = 1;
    for (size_t d = 0; d + 1 < shape.size(); ++d) p.rows *= shape[d];
    if (p.target.always_f32) p.type = GgmlType::F32;
    else if (dtype == DType::BF16) p.type = GgmlType::BF16;
    else if (dtype == DType::F16) p.type = GgmlType::F16;
    else if (dtype == DType::F32) p.type = GgmlType::F32;
    else
      errors_.push_back(fmt::format("{}: dtype {} has no unquantized GGUF type (F32/F16/BF16)",
                                    hf, dtype_name(dtype)));
    if (dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::F32)
      p.type = GgmlType::F32;  // only reached with an error recorded
    return push(std::move(p));
  }

  // Lays out the file and writes its header. Throws listing every tensor that has no llama.cpp
  // name, an incomplete or inconsistent expert stack, ...
  void open(const fs::path& path, GgufMetadata meta) {
    std::vector<std::string> order;
    std::map<std::string, std::vector<size_t>> groups;
    for (size_t i = 0; i < pieces_.size(); ++i) {
      auto [it, fresh] = groups.try_emplace(pieces_[i].target.name);
      if (fresh) order.push_back(pieces_[i].target.name);
      it->second.push_back(i);
    }
    std::vector<GgufTensor> tensors;
    std::vector<std::string> a4_names;
    for (const auto& name : order) {
      const auto& ids = groups[name];
      const Piece& first = pieces_[ids.front()];
      std::vector<uint64_t> ne;
      bool consistent = true;
      for (size_t i : ids) {
        const Piece& p = pieces_[i];
        consistent = consistent && p.rows == first.rows && p.cols == first.cols &&
                     p.type == first.type && p.nvfp4 == first.nvfp4 &&
                     p.input_scale == first.input_scale && (p.target.expert >= 0) ==
                     (first.target.expert >= 0);
      }
      if (!consistent) {
        errors_.push_back(fmt::format("{}: its experts differ in shape, type or quantization",
                                      name));
        continue;
      }
      uint64_t experts = 0;
      if (first.target.expert >= 0) {
        experts = ids.size();
        std::vector<int> seen(experts, 0);
        for (size_t i : ids) {
          const int64_t e = pieces_[i].target.expert;
          if (e < 0 || static_cast<uint64_t>(e) >= experts || seen[e]++) {
            errors_.push_back(fmt::format("{}: expert {} out of range or twice (found {} experts)",
                                          name, e, experts));
            consistent = false;
          }
        }
        if (config_.num_experts > 0 && experts != static_cast<uint64_t>(config_.num_experts)) {
          errors_.push_back(fmt::format("{}: {} experts, config num_experts is {}", name, experts,
                                        config_.num_experts));
          consistent = false;
        }
        if (!consistent) continue;
        ne = {first.cols, first.rows, experts};
      } else if (ids.size() > 1) {
        errors_.push_back(fmt::format("{}: {} source tensors map to it", name, ids.size()));
        continue;
      } else if (first.nvfp4) {
        ne = {first.cols, first.rows};
      } else {
        for (auto d = first.shape.rbegin(); d != first.shape.rend(); ++d)
          if (*d != 1 || !first.target.squeeze) ne.push_back(*d);
        if (ne.empty()) ne = {1};
      }
      if (first.nvfp4 && first.cols % kGgmlNvfp4Block != 0) {
        errors_.push_back(fmt::format("{}: K={} is not a multiple of 64 (plan error)", name,
                                      first.cols));
        continue;
      }
      const size_t t = tensors.size();
      tensors.push_back({name, ne, first.type});
      size_t scale = kNone, input = kNone;
      const std::string stem = name.substr(0, name.size() - std::string(".weight").size());
      const std::vector<uint64_t> sne = {experts > 0 ? experts : 1};
      if (first.nvfp4) {
        scale = tensors.size();
        tensors.push_back({stem + ".scale", sne, GgmlType::F32});
        if (first.input_scale) {
          input = tensors.size();
          tensors.push_back({stem + ".input_scale", sne, GgmlType::F32});
        } else {
          a4_names.push_back(name);  // W4A16: llama.cpp keeps this product's activations in 8 bits
        }
      }
      for (size_t i : ids) pieces_[i].tensor = t, pieces_[i].scale = scale, pieces_[i].input = input;
    }
    if (!errors_.empty())
      throw Error(fmt::format("--format gguf: {} problem(s):{}", errors_.size(),
                              join_lines(errors_)));
    if (!a4_names.empty()) {
      meta.add_strings("general.tensor_extra.name", a4_names);
      meta.add_bools("general.tensor_extra.prec_a4", std::vector<bool>(a4_names.size(), false));
    }
    writer_ = std::make_unique<GgufFileWriter>(path, meta, std::move(tensors));
    for (const auto& [piece, values] : computed_)
      put_plain(piece, reinterpret_cast<const uint8_t*>(values.data()));
  }

  void put_nvfp4(size_t i, const uint8_t* packed, const uint8_t* scales, float s2,
                 float input_scale) {
    const Piece& p = pieces_.at(i);
    std::vector<uint8_t> out(p.rows * (p.cols / kGgmlNvfp4Block) * kGgmlNvfp4BlockBytes);
    const auto row_of = rows_of(p);
    std::vector<uint8_t> moved_codes, moved_scales;
    if (const auto col_of = cols_of(p); !col_of.empty()) {
      // Columns move in whole 16-element blocks (8 code bytes, one scale byte).
      const uint64_t blocks = p.cols / 16;
      moved_codes.resize(p.rows * p.cols / 2);
      moved_scales.resize(p.rows * blocks);
      for (uint64_t b = 0; b < blocks; ++b) {
        const uint64_t from = col_of[b * 16];
        if (from % 16 != 0 || col_of[b * 16 + 15] != from + 15)
          throw Error(fmt::format("{}: its column reordering moves parts of 16-weight NVFP4 "
                                  "blocks (head_dim not a multiple of 16)",
                                  p.hf));
        for (uint64_t r = 0; r < p.rows; ++r) {
          std::memcpy(moved_codes.data() + r * p.cols / 2 + b * 8,
                      packed + r * p.cols / 2 + from / 2, 8);
          moved_scales[r * blocks + b] = scales[r * blocks + from / 16];
        }
      }
      packed = moved_codes.data();
      scales = moved_scales.data();
    }
    try {
      repack_nvfp4_to_ggml(packed, scales, p.rows, p.cols, out.data(),
                           row_of.empty() ? nullptr : row_of.data());
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}", p.hf, e.what()));
    }
    const uint64_t slot = p.target.expert >= 0 ? static_cast<uint64_t>(p.target.expert) : 0;
    writer_->write(p.tensor, slot * out.size(), out);
    put_f32(p.scale, slot, s2);
    if (p.input != kNone) put_f32(p.input, slot, input_scale);
    bytes_ += out.size() + 4 + (p.input != kNone ? 4 : 0);
  }

  // `bytes` holds the piece's elements in the dtype given to add_plain.
  void put_plain(size_t i, const uint8_t* bytes) {
    const Piece& p = pieces_.at(i);
    const uint64_t count = p.rows * p.cols;
    std::vector<uint8_t> converted;
    const uint8_t* data = bytes;
    size_t elem = dtype_size(p.dtype);
    if (p.type == GgmlType::F32 && p.dtype != DType::F32) {
      converted.resize(count * 4);
      decode_to_f32(bytes, p.dtype, count, reinterpret_cast<float*>(converted.data()));
      data = converted.data();
      elem = 4;
    }
    if (p.target.values != GgufTarget::Values::Copy) {
      if (data != converted.data()) converted.assign(data, data + count * 4);
      auto* v = reinterpret_cast<float*>(converted.data());
      for (uint64_t k = 0; k < count; ++k)
        v[k] = p.target.values == GgufTarget::Values::PlusOne
                   ? 1.0f + v[k]
                   : static_cast<float>(-std::exp(static_cast<double>(v[k])));
      data = converted.data();
    }
    const uint64_t row_bytes = p.cols * elem;
    const auto row_of = rows_of(p);
    const auto col_of = cols_of(p);
    std::vector<uint8_t> permuted;
    if (!row_of.empty() || !col_of.empty()) {
      permuted.resize(count * elem);
      for (uint64_t r = 0; r < p.rows; ++r) {
        const uint8_t* src = data + (row_of.empty() ? r : row_of[r]) * row_bytes;
        uint8_t* dst = permuted.data() + r * row_bytes;
        if (col_of.empty()) std::memcpy(dst, src, row_bytes);
        else
          for (uint64_t k = 0; k < p.cols; ++k)
            std::memcpy(dst + k * elem, src + col_of[k] * elem, elem);
      }
      data = permuted.data();
    }
    const uint64_t size = count * elem;
    const uint64_t slot = p.target.expert >= 0 ? static_cast<uint64_t>(p.target.expert) : 0;
    writer_->write(p.tensor, slot * size, {data, size});
    bytes_ += size;
  }

  // A tensor computed here rather than read (llama-3's rope_freqs), written right after open().
  void add_computed(const std::string& name, std::vector<float> values) {
    Piece p;
    p.hf = "(computed)";
    p.target.name = name;
    p.shape = {values.size()};
    p.dtype = DType::F32;
    p.type = GgmlType::F32;
    p.cols = values.size();
    p.rows = 1;
    computed_.emplace_back(push(std::move(p)), std::move(values));
  }

  void finish() { writer_->finish(); }
  uint64_t bytes_written() const { return bytes_; }
  bool nvfp4(size_t i) const { return pieces_.at(i).nvfp4; }

 private:
  struct Piece {
    std::string hf;
    GgufTarget target;
    bool nvfp4 = false, input_scale = false;
    uint64_t rows = 0, cols = 0;
    std::vector<uint64_t> shape;
    DType dtype = DType::BF16;
    GgmlType type = GgmlType::F32;
    size_t tensor = kNone, scale = kNone, input = kNone;
  };

  Piece piece(const std::string& hf, size_t ndim) {
    Piece p;
    p.hf = hf;
    if (auto t = gguf_target(hf, arch_, config_, ndim)) p.target = *t;
    else
      errors_.push_back(fmt::format("{}: llama.cpp's '{}' architecture has no tensor for it", hf,
                                    arch_.name));
    return p;
  }
  size_t push(Piece p) {
    if (p.target.name.empty()) p.target.name = "?" + p.hf;  // reported by open()
    pieces_.push_back(std::move(p));
    return pieces_.size() - 1;
  }
  std::vector<uint64_t> rows_of(const Piece& p) const {
    if (p.target.permute_heads > 0) return rope_pair_rows(p.rows, p.target.permute_heads);
    if (!p.target.tiling.columns) return tiled_heads(p.rows, p.target.tiling);
    return {};
  }
  std::vector<uint64_t> cols_of(const Piece& p) const {
    return p.target.tiling.columns ? tiled_heads(p.cols, p.target.tiling)
                                   : std::vector<uint64_t>{};
  }
  void put_f32(size_t t, uint64_t slot, float v) {
    uint8_t b[4];
    std::memcpy(b, &v, 4);
    writer_->write(t, slot * 4, {b, 4});
  }

  GgufArch arch_;
  const ModelConfig& config_;
  std::vector<Piece> pieces_;
  std::vector<std::string> errors_;
  std::unique_ptr<GgufFileWriter> writer_;
  std::vector<std::pair<size_t, std::vector<float>>> computed_;
  uint64_t bytes_ = 0;
};

// Tensors llama.cpp needs that the checkpoint does not hold.
void add_computed_tensors(GgufBuilder& b, const GgufArch& arch, const ModelConfig& config) {
  const nlohmann::json r = rope_scaling_of(config);
  if (arch.name == "llama" && !r.is_null() && r.value("rope_type", r.value("type", "")) == "llama3")
    b.add_computed("rope_freqs.weight", llama3_rope_factors(config));
}

GgufMetadata file_metadata(const GgufArch& arch, const Checkpoint& source,
                           const ModelConfig& config) {
  GgufMetadata meta;
  add_arch_metadata(meta, arch, config, source.dir().filename().string());
  add_tokenizer_metadata(meta, source.dir(), config);
  return meta;
}

// The embedding tensor to write again as output.weight, or "" (the arch reads token_embd when
// output.weight is absent, or the checkpoint has its own lm_head).
std::string tied_output_source(const GgufArch& arch, const Checkpoint& c) {
  if (!arch.needs_output || c.has("lm_head.weight") || !c.has("model.embed_tokens.weight"))
    return "";
  return "model.embed_tokens.weight";
}

// Output waiting for the GGUF writer thread (repack + pwrite run there, beside quantization).
constexpr uint64_t kGgufInFlight = 256ull << 20;

class GgufSink : public EntrySink {
 public:
  GgufSink(GgufBuilder& b, AsyncWriter& async, const std::vector<size_t>& piece_of,
           const Checkpoint& source, const Plan& plan, size_t tied_entry, size_t tied_piece)
      : b_(b), async_(async), piece_of_(piece_of), source_(source), plan_(plan),
        tied_entry_(tied_entry), tied_piece_(tied_piece) {}
  void quantized(size_t entry, QuantizedWeight&& q) override {
    auto w = std::make_shared<QuantizedWeight>(std::move(q));
    const size_t piece = piece_of_.at(entry);
    async_.post([this, w, piece] {
      b_.put_nvfp4(piece, w->packed.data(), w->scales.data(), w->s2, w->input_scale);
    }, w->packed.size() + w->scales.size());
  }
  void copied(size_t entry, std::span<const uint8_t> bytes) override {
    // Borrowed from the source mapping until written; released then.
    const std::string tensor = plan_.entries[entry].source.tensor;
    const size_t piece = piece_of_.at(entry), tied = entry == tied_entry_ ? tied_piece_ : kNone;
    async_.post([this, bytes, piece, tied, tensor] {
      b_.put_plain(piece, bytes.data());
      if (tied != kNone) b_.put_plain(tied, bytes.data());
      source_.release(tensor);
    }, bytes.size());
  }
  void dequantized(size_t entry, std::vector<uint8_t>&& bf16) override {
    auto v = std::make_shared<std::vector<uint8_t>>(std::move(bf16));
    const size_t piece = piece_of_.at(entry), tied = entry == tied_entry_ ? tied_piece_ : kNone;
    async_.post([this, v, piece, tied] {
      b_.put_plain(piece, v->data());
      if (tied != kNone) b_.put_plain(tied, v->data());
    }, v->size());
  }

 private:
  GgufBuilder& b_;
  AsyncWriter& async_;
  const std::vector<size_t>& piece_of_;
  const Checkpoint& source_;
  const Plan& plan_;
  size_t tied_entry_, tied_piece_;
};

float scalar_f32(const Checkpoint& c, const std::string& name) {
  const TensorInfo& info = c.info(name);
  if (info.dtype != DType::F32 || info.nbytes() != 4)
    throw Error(fmt::format("{}: expected one F32 value, got {} of {} bytes", name,
                            dtype_name(info.dtype), info.nbytes()));
  float v;
  std::memcpy(&v, c.bytes(name).data(), 4);
  return v;
}

// An NVFP4 linear of a ModelOpt (format A) or compressed-tensors (format B) checkpoint.
struct Nvfp4Module {
  std::string module, packed;  // "<m>", "<m>.weight" or "<m>.weight_packed"
  bool ct = false;
};

std::vector<Nvfp4Module> nvfp4_modules(const Checkpoint& c) {
  std::vector<Nvfp4Module> out;
  for (const auto& name : c.tensor_names()) {
    for (const bool ct : {false, true}) {
      const std::string suffix = ct ? ".weight_packed" : ".weight";
      if (!name.ends_with(suffix)) continue;
      const std::string m = name.substr(0, name.size() - suffix.size());
      if (c.info(name).dtype != DType::U8 || !c.has(m + ".weight_scale")) continue;
      if (c.info(m + ".weight_scale").shape.size() != 2) continue;
      out.push_back({m, name, ct});
    }
  }
  return out;
}

}  // namespace

void set_gguf_plan_options(PlanOptions& options, const ModelConfig& config,
                           const std::string& label) {
  options.k_multiple = kGgmlNvfp4Block;
  options.k_multiple_why = " (llama.cpp's NVFP4 blocks hold 64 weights; written unquantized)";
  const GgufArch arch = gguf_arch(config, label);
  for (const auto& glob : arch.unscaled_globs)
    options.rules.push_back(
        {Rule::Kind::Exclude, glob,
         fmt::format("--format gguf (llama.cpp's {} graph does not apply the NVFP4 .scale of {}, "
                     "llama.cpp 0c1e570)",
                     arch.name, arch.unscaled_what)});
}

ExportResult export_gguf(const Plan& plan, const Checkpoint& source, const ModelConfig& config,
                         const std::vector<float>& input_scales, const QuantOptions& options,
                         const fs::path& file, const StreamProgress& progress) {
  const GgufArch arch = gguf_arch(config, (source.dir() / "config.json").string());
  GgufBuilder b(arch, config);
  std::vector<size_t> piece_of(plan.entries.size(), kNone);
  std::vector<size_t> order;
  std::map<std::string, std::string> left_out;  // module prefix -> why
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const PlanEntry& e = plan.entries[i];
    if (e.action == Action::Drop) continue;
    if (const std::string why = gguf_left_out(e.name); !why.empty()) {
      left_out.emplace(e.name.substr(0, e.name.find('.', e.name.find('.') + 1)), why);
      continue;
    }
    if (e.bmm_experts > 0)
      throw Error(fmt::format("--format gguf: '{}' is a 3-D BMM expert tensor (gpt-oss, "
                              "Llama-4), which fp4kit does not write to GGUF yet",
                              e.name));
    const TensorInfo& info = source.info(e.source.tensor);
    if (e.action == Action::Quantize)
      piece_of[i] = b.add_nvfp4(e.name + ".weight", e.rows, e.cols, !options.weights_only);
    else  // a Dequantize entry has the logical shape (a pack-quantized source's is not stored)
      piece_of[i] = b.add_plain(e.name, e.action == Action::Dequantize ? e.shape : info.shape,
                                e.action == Action::Dequantize ? DType::BF16 : info.dtype);
    order.push_back(i);
  }
  size_t tied_entry = kNone, tied_piece = kNone;
  if (const std::string tied = tied_output_source(arch, source); !tied.empty()) {
    for (size_t i = 0; i < plan.entries.size(); ++i) {
      const PlanEntry& e = plan.entries[i];
      if (e.source.tensor != tied || e.action == Action::Drop) continue;
      if (e.action == Action::Quantize)
        throw Error(fmt::format("--format gguf: {} is quantized, but llama.cpp's '{}' needs it "
                                "again as output.weight and NVFP4 output tensors cannot be tied",
                                tied, arch.name));
      const TensorInfo& info = source.info(tied);
      tied_entry = i;
      tied_piece = b.add_plain(e.name, info.shape,
                               e.action == Action::Dequantize ? DType::BF16 : info.dtype,
                               "output.weight");
    }
  }
  add_computed_tensors(b, arch, config);
  b.open(file, file_metadata(arch, source, config));
  ExportResult result;
  {
    AsyncWriter async(kGgufInFlight);
    GgufSink sink(b, async, piece_of, source, plan, tied_entry, tied_piece);
    result.entries = run_stream(plan, source, order, input_scales, options, sink, progress);
    async.drain();
  }
  b.finish();
  result.files.push_back(file.filename());
  result.bytes_written = b.bytes_written();
  for (const auto& [prefix, why] : left_out) result.notes.push_back(prefix + ".*: " + why);
  return result;
}

bool is_nvfp4_checkpoint(const Checkpoint& source) { return !nvfp4_modules(source).empty(); }

RepackResult repack_gguf(const Checkpoint& c, const ModelConfig& config, const fs::path& file) {
  const GgufArch arch = gguf_arch(config, (c.dir() / "config.json").string());
  GgufBuilder b(arch, config);
  RepackResult result;
  struct Job {
    size_t piece;
    std::string tensor;  // plain: the tensor; NVFP4: the module
    const Nvfp4Module* mod = nullptr;
    bool dequantize = false;
  };
  const auto mods = nvfp4_modules(c);
  std::map<std::string, const Nvfp4Module*> by_packed;
  std::set<std::string> aux;
  for (const auto& m : mods) {
    by_packed[m.packed] = &m;
    for (const char* s : {".weight_scale", ".weight_scale_2", ".input_scale",
                          ".weight_global_scale", ".input_global_scale"})
      aux.insert(m.module + s);
  }
  std::vector<Job> jobs;
  std::map<std::string, std::string> left_out;
  for (const auto& name : c.tensor_names()) {
    if (aux.count(name)) continue;
    if (const std::string why = gguf_left_out(name); !why.empty()) {
      left_out.emplace(name.substr(0, name.find('.', name.find('.') + 1)), why);
      continue;
    }
    if (name.ends_with(".k_scale") || name.ends_with(".v_scale")) {
      result.notes.push_back(name + ": FP8 KV-cache scale, not written (llama.cpp has no use "
                                    "for it)");
      continue;
    }
    const TensorInfo& info = c.info(name);
    if (auto it = by_packed.find(name); it != by_packed.end()) {
      const Nvfp4Module& m = *it->second;
      if (info.shape.size() != 2)
        throw Error(fmt::format("{}: NVFP4 weight must be 2-D, got {} dims", name,
                                info.shape.size()));
      const uint64_t rows = info.shape[0], cols = info.shape[1] * 2;
      const auto& sc = c.info(m.module + ".weight_scale");
      if (sc.dtype != DType::F8_E4M3 || sc.shape != std::vector<uint64_t>{rows, cols / 16})
        throw Error(fmt::format("{}.weight_scale: expected F8_E4M3 [{}, {}] for {} [{}, {}]",
                                m.module, rows, cols / 16, name, rows, cols / 2));
      const bool input = c.has(m.module + (m.ct ? ".input_global_scale" : ".input_scale"));
      bool unscaled_mlp = false;
      for (const auto& glob : arch.unscaled_globs)
        unscaled_mlp = unscaled_mlp || glob_match(glob, m.module);
      Job j{0, m.module, &m, cols % kGgmlNvfp4Block != 0 || unscaled_mlp};
      if (j.dequantize) {
        j.piece = b.add_plain(m.module + ".weight", {rows, cols}, DType::F32);
        result.notes.push_back(fmt::format(
            "{}: {}, written as F32 (exact dequantization)", m.module,
            unscaled_mlp ? fmt::format("llama.cpp's {} graph does not apply the .scale of {} "
                                       "(llama.cpp 0c1e570)",
                                       arch.name, arch.unscaled_what)
                         : fmt::format("K={} is not a multiple of 64 (llama.cpp's NVFP4 block)",
                                       cols)));
      } else {
        j.piece = b.add_nvfp4(m.module + ".weight", rows, cols, input);
      }
      jobs.push_back(j);
      continue;
    }
    jobs.push_back({b.add_plain(name, info.shape, info.dtype), name});
    if (name == tied_output_source(arch, c))
      jobs.push_back({b.add_plain(name, info.shape, info.dtype, "output.weight"), name});
  }
  add_computed_tensors(b, arch, config);
  b.open(file, file_metadata(arch, c, config));
  std::vector<float> values;
  for (const Job& j : jobs) {
    if (!j.mod) {
      b.put_plain(j.piece, c.bytes(j.tensor).data());
      c.release(j.tensor);  // the mapping stays valid; a second read maps the pages again
      ++result.plain;
      continue;
    }
    const Nvfp4Module& m = *j.mod;
    const auto& info = c.info(m.packed);
    const uint64_t rows = info.shape[0], cols = info.shape[1] * 2;
    // Format B stores divisors: weight_global_scale = 1/s2, input_global_scale = 1/input_scale.
    const float g = scalar_f32(c, m.module + (m.ct ? ".weight_global_scale" : ".weight_scale_2"));
    const float s2 = m.ct ? 1.0f / g : g;
    if (!(s2 > 0) || !std::isfinite(s2))
      throw Error(fmt::format("{}: global weight scale {} is not positive and finite", m.module,
                              s2));
    float in = 0;
    const std::string in_name = m.module + (m.ct ? ".input_global_scale" : ".input_scale");
    if (c.has(in_name)) in = m.ct ? 1.0f / scalar_f32(c, in_name) : scalar_f32(c, in_name);
    const uint8_t* packed = c.bytes(m.packed).data();
    const uint8_t* scales = c.bytes(m.module + ".weight_scale").data();
    if (j.dequantize) {
      values.resize(rows * cols);
      nvfp4_dequantize(packed, scales, rows, cols, s2, values.data());
      b.put_plain(j.piece, reinterpret_cast<const uint8_t*>(values.data()));
      ++result.dequantized;
    } else {
      b.put_nvfp4(j.piece, packed, scales, s2, in);
      ++result.nvfp4;
    }
    c.release(m.packed);
    c.release(m.module + ".weight_scale");
  }
  b.finish();
  result.bytes_written = b.bytes_written();
  for (const auto& [prefix, why] : left_out) result.notes.push_back(prefix + ".*: " + why);
  return result;
}

}  // namespace fp4kit
