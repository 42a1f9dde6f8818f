#include "fp4kit/export/checkpoint_export.hpp"

#include <fmt/core.h>

#include <cstring>
#include <fstream>
#include <map>

#include "fp4kit/error.hpp"
#include "fp4kit/export/async_writer.hpp"
#include "fp4kit/export/output_layout.hpp"
#include "fp4kit/export/quant_config.hpp"
#include "fp4kit/io/phase_trace.hpp"
#include "fp4kit/io/write_tuning.hpp"

namespace fp4kit {

namespace {
namespace fs = std::filesystem;

std::vector<uint8_t> f32_bytes(float v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

// Maps each finished entry to its named output tensors and queues them for the writer.
class WriterSink : public EntrySink {
 public:
  WriterSink(const std::vector<OutputTensor>& layout, const Checkpoint& source, const Plan& plan,
             AsyncWriter& writer, bool reciprocal_globals)
      : layout_(layout), source_(source), plan_(plan), writer_(writer),
        reciprocal_(reciprocal_globals) {
    for (size_t i = 0; i < layout_.size(); ++i) by_entry_.emplace(layout_[i].entry, i);
  }

  void quantized(size_t entry, QuantizedWeight&& q) override {
    auto [lo, hi] = by_entry_.equal_range(entry);
    for (auto it = lo; it != hi; ++it) {
      const OutputTensor& t = layout_[it->second];
      switch (t.part) {
        case OutputPart::Weight: writer_.write(t.spec.name, std::move(q.packed)); break;
        case OutputPart::WeightScale: writer_.write(t.spec.name, std::move(q.scales)); break;
        case OutputPart::GlobalScale:
          writer_.write(t.spec.name, f32_bytes(reciprocal_ ? 1.0f / q.s2 : q.s2));
          break;
        case OutputPart::InputScale:
          writer_.write(t.spec.name,
                        f32_bytes(reciprocal_ ? 1.0f / q.input_scale : q.input_scale));
          break;
        case OutputPart::Copy:
        case OutputPart::Dequantized:
          throw Error(fmt::format("output '{}': copy part for a quantized entry", t.spec.name));
      }
    }
  }

  // BMM experts: the scalars first, then the packed tensor expert by expert, then the scales.
  void bmm_begin(size_t entry, float s2, float input_scale) override {
    auto [lo, hi] = by_entry_.equal_range(entry);
    for (auto it = lo; it != hi; ++it) {
      const OutputTensor& t = layout_[it->second];
      if (t.part == OutputPart::InputScale) writer_.write(t.spec.name, f32_bytes(input_scale));
      if (t.part == OutputPart::GlobalScale) writer_.write(t.spec.name, f32_bytes(s2));
    }
  }
  void bmm_packed(size_t entry, std::vector<uint8_t>&& packed, bool last) override {
    writer_.write_part(part_name(entry, OutputPart::Weight), std::move(packed), last);
  }
  void bmm_scales(size_t entry, std::vector<uint8_t>&& scales) override {
    writer_.write(part_name(entry, OutputPart::WeightScale), std::move(scales));
  }

  void dequantized(size_t entry, std::vector<uint8_t>&& bf16) override {
    auto it = by_entry_.find(entry);
    writer_.write(layout_[it->second].spec.name, std::move(bf16));
  }

  void copied(size_t entry, std::span<const uint8_t> bytes) override {
    auto it = by_entry_.find(entry);
    const OutputTensor& t = layout_[it->second];
    const std::string tensor = plan_.entries[entry].source.tensor;
    const Checkpoint* src = &source_;
    writer_.write_borrowed_pieces(t.spec.name, bytes, write_tuning().kept_piece_bytes,
                                  [src, tensor] { src->release(tensor); });
  }

 private:
  const std::string& part_name(size_t entry, OutputPart part) const {
    auto [lo, hi] = by_entry_.equal_range(entry);
    for (auto it = lo; it != hi; ++it)
      if (layout_[it->second].part == part) return layout_[it->second].spec.name;
    throw Error(fmt::format("entry {}: no output tensor for this part (internal error)", entry));
  }

  const std::vector<OutputTensor>& layout_;
  const Checkpoint& source_;
  const Plan& plan_;
  AsyncWriter& writer_;
  bool reciprocal_;
  // Layout order per entry is the write order the writer expects.
  std::multimap<size_t, size_t> by_entry_;
};

void write_json(const fs::path& path, const nlohmann::ordered_json& j) {
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  f.close();
  if (!f) throw Error(fmt::format("cannot write {}", path.string()));
}

void copy_sidecars(const Checkpoint& source, const fs::path& dir) {
  for (const auto& rel : source.sidecar_files()) {
    if (rel == "hf_quant_config.json") continue;  // a stale one would contradict ours
    const fs::path to = dir / rel;
    fs::create_directories(to.parent_path());
    std::error_code ec;
    fs::copy_file(source.dir() / rel, to, fs::copy_options::overwrite_existing, ec);
    if (ec)
      throw Error(fmt::format("cannot copy sidecar file {} to {}: {}",
                              (source.dir() / rel).string(), to.string(), ec.message()));
  }
}
}  // namespace

ExportResult export_checkpoint(const Plan& plan, const Checkpoint& source,
                               const std::vector<float>& input_scales,
                               const ExportOptions& options, const fs::path& dir,
                               const StreamProgress& progress,
                               const std::function<void()>& while_syncing) {
  const auto layout = output_layout(plan, source, options.quant);
  std::vector<size_t> order;
  for (const auto& t : layout)
    if (order.empty() || order.back() != t.entry) order.push_back(t.entry);

  ExportResult result;
  CheckpointWriter writer(dir, specs_of(layout), options.max_shard_bytes);
  {
    AsyncWriter async(writer, options.max_in_flight_bytes);
    WriterSink sink(layout, source, plan, async,
                    options.quant.format == OutputFormat::CompressedTensors);
    trace_phase("stream starts");
    result.entries = run_stream(plan, source, order, input_scales, options.quant, sink, progress);
    trace_phase("stream done (every tensor quantized or queued)");
    async.drain();
    trace_phase("writer drained (every byte in the page cache)");
  }
  writer.finish_writing();  // the shards' fsyncs run in the background from here
  for (const auto& f : writer.files()) result.files.push_back(f.filename());
  for (const auto& t : layout) result.bytes_written += t.spec.nbytes();

  // config.json: the source's, key order kept, plus quantization_config.
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  if (source.has_config()) {
    std::ifstream f(source.dir() / "config.json");
    config = nlohmann::ordered_json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) config = nlohmann::ordered_json::parse(source.config().dump());
  }
  config["quantization_config"] = quantization_config(plan, options.quant);
  // A wrapper's text_config may carry the source's own quantization (Kimi-K2.5: its INT4
  // compressed-tensors config): the output's is the top-level one, so no second, stale one.
  if (auto tc = config.find("text_config"); tc != config.end() && tc->is_object())
    for (const char* key : {"quantization_config", "compression_config"}) tc->erase(key);
  write_json(dir / "config.json", config);
  if (options.quant.format == OutputFormat::ModelOpt)
    write_json(dir / "hf_quant_config.json", hf_quant_config(plan, options.quant));
  copy_sidecars(source, dir);
  trace_phase("config and sidecars written");
  if (while_syncing) while_syncing();
  trace_phase("verify done (while fsyncing)");
  writer.wait_durable();
  trace_phase("shards fsynced");
  return result;
}

}  // namespace fp4kit
