#pragma once
// Writes the quantized checkpoint into a directory (the OUT.partial/ of an OutputDir): weights in
// shards, config.json with quantization_config, hf_quant_config.json (format A), sidecar files.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/quant_options.hpp"
#include "fp4kit/quant/stream.hpp"

namespace fp4kit {

struct ExportOptions {
  QuantOptions quant;
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
  uint64_t max_in_flight_bytes = 512ull << 20;  // finished output waiting for the disk
};

struct ExportResult {
  std::vector<EntryResult> entries;
  std::vector<std::filesystem::path> files;  // written, relative to the directory
  uint64_t bytes_written = 0;
  std::vector<std::string> notes;  // --format gguf: tensors left out and why
};

// `while_syncing`: runs once every file is written (shards, index, config.json, sidecars) while
// the shards' fsyncs are still under way (e.g. a structural verify that reads them back); the
// shards are durable when export_checkpoint returns, whatever it does.
ExportResult export_checkpoint(const Plan& plan, const Checkpoint& source,
                               const std::vector<float>& input_scales,
                               const ExportOptions& options, const std::filesystem::path& dir,
                               const StreamProgress& progress,
                               const std::function<void()>& while_syncing = {});

}  // namespace fp4kit
