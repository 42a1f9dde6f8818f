#pragma once
// How checkpoint bytes travel to the disk. The defaults are what the benchmarks chose
// (BENCHMARKS.md, "Weight-only quantize on many cores"); environment variables override them for measurements
// only: they change speed and memory, never the bytes written or what is synced when.
//   FP4KIT_WRITERS=N          writer threads (1..64; default 4)
//   FP4KIT_KEPT_PIECE_MIB=N   tensors kept as they are (embeddings, lm_head) go to the writer in
//                             pieces of N MiB, so that several threads copy one and the stream
//                             quantizes the next tensors meanwhile (0: whole; default 64)
//   FP4KIT_WB_WINDOW_MIB=N    write-behind starts writeback every N MiB of a shard (default 32)
//   FP4KIT_WB_LAG_MIB=N       and waits for the disk N MiB behind (0: 1 GiB, or RAM / 16 on a
//                             small machine; default 0)
#include <cstdint>
#include <functional>

namespace fp4kit {

struct WriteTuning {
  unsigned writers = 4;
  uint64_t kept_piece_bytes = 64ull << 20;
  uint64_t writeback_window = 32ull << 20;
  uint64_t dirty_lag = 0;  // 0: 1 GiB, or RAM / 16 on a small machine
};

// The defaults with the overrides that `env` (getenv or a test's table) gives. A malformed value
// is an error (fp4kit::Error naming the variable), never ignored.
WriteTuning parse_write_tuning(const std::function<const char*(const char*)>& env);
// parse_write_tuning(std::getenv), read once per process.
const WriteTuning& write_tuning();

}  // namespace fp4kit
