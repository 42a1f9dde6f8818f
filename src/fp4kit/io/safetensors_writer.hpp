#pragma once
// Streaming writer of a (sharded) safetensors checkpoint: the output tensors (name, dtype, shape)
// are declared up front, which fixes every tensor's offset; then their bytes arrive in that order
// (write/write_part), or are placed in that order (reserve) and written at their offsets by
// several threads at once (write_at).
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

struct TensorSpec {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  uint64_t nbytes() const;
};

inline constexpr uint64_t kDefaultMaxShardBytes = 5ull << 30;  // 5 GB

class CheckpointWriter {
 public:
  // Lays out shards by max_shard_bytes: "model.safetensors" when one suffices, else
  // "model-0000i-of-0000N.safetensors" plus model.safetensors.index.json. Deterministic bytes.
  CheckpointWriter(std::filesystem::path dir, std::vector<TensorSpec> tensors,
                   uint64_t max_shard_bytes = kDefaultMaxShardBytes,
                   std::map<std::string, std::string> metadata = {{"format", "pt"}});
  ~CheckpointWriter();

  // Appends the next tensor; must follow the declared order and match its byte size.
  void write(std::string_view name, std::span<const uint8_t> data);
  // Appends the next tensor in pieces (a tensor too large to hold in memory at once); `last`
  // closes it, and the pieces must then add up to its byte size exactly.
  void write_part(std::string_view name, std::span<const uint8_t> data, bool last);
  // Positional writing: reserve() takes the next tensor (or piece) in the declared order, with the
  // same checks as write_part, and says where its bytes go; write_at() then writes them there and
  // may run on any thread, concurrently with other write_at() calls and reserve(). A shard's fsync
  // starts (in the background) once all its bytes arrived. write_part = reserve + write_at.
  struct Slot {
    size_t shard = 0;
    uint64_t offset = 0;  // in the shard's file
    uint64_t size = 0;
  };
  Slot reserve(std::string_view name, uint64_t size, bool last);
  void write_at(const Slot& slot, std::span<const uint8_t> data);
  // Checks that every tensor arrived, writes the index, fsyncs. Throws on any failure.
  // = finish_writing() + wait_durable().
  void finish();
  // Checks that every tensor arrived and writes the index (fsynced); the shards' fsyncs run in
  // background threads (one per shard, in parallel), so the caller can read the files meanwhile.
  void finish_writing();
  // Waits for those fsyncs and fsyncs the directory: the files are durable when it returns.
  // Throws the first fsync or close failure.
  void wait_durable();

  const std::vector<std::filesystem::path>& files() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp4kit
