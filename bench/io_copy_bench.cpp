// Checkpoint I/O benchmark (issue 3): builds a synthetic sharded checkpoint, or copies one tensor
// by tensor through Checkpoint (mmap reader) + CheckpointWriter + OutputDir, the path every
// fp4kit command uses, reporting time, throughput and peak RSS against the largest tensor.
//   bench_io_copy make DIR GIB        synthetic checkpoint of about GIB GiB (1 GiB shards)
//   bench_io_copy copy SRC OUT        copy (OUT replaced), prints one result line
// bench/io_copy.sh drives both and compares with cp in the same run.
#include <sys/resource.h>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/file_sync.hpp"
#include "fp4kit/io/output_dir.hpp"
#include "fp4kit/io/safetensors_writer.hpp"

namespace fs = std::filesystem;
using namespace fp4kit;

namespace {

// Tensors shaped like a MoE model's: many 2048x768 bf16 experts (3 MiB), attention 2048x2048
// (8 MiB), and one large embedding (32000x2048 bf16 = 125 MiB), the largest tensor.
std::vector<TensorSpec> synthetic_specs(uint64_t target_bytes) {
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", DType::BF16, {32000, 2048}});
  uint64_t total = specs[0].nbytes();
  for (int layer = 0; total < target_bytes; ++layer) {
    const std::string p = fmt::format("model.layers.{}.", layer);
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
      specs.push_back({p + "self_attn." + n + ".weight", DType::BF16, {2048, 2048}});
    specs.push_back({p + "input_layernorm.weight", DType::BF16, {2048}});
    for (int e = 0; e < 64 && total < target_bytes; ++e)
      for (const char* n : {"gate_proj", "up_proj", "down_proj"}) {
        specs.push_back({fmt::format("{}mlp.experts.{}.{}.weight", p, e, n), DType::BF16,
                         {2048, 768}});
        total += 2048 * 768 * 2;
      }
    total += 4 * 2048 * 2048 * 2 + 2048 * 2;
  }
  return specs;
}

int make(const fs::path& dir, double gib) {
  const auto specs = synthetic_specs(static_cast<uint64_t>(gib * (1ull << 30)));
  fs::create_directories(dir);
  CheckpointWriter w(dir, specs, 1ull << 30);
  std::vector<uint8_t> buf;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (const auto& s : specs) {
    buf.resize(s.nbytes());
    for (size_t i = 0; i + 8 <= buf.size(); i += 8) {  // xorshift: incompressible bytes
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;
      std::memcpy(&buf[i], &state, 8);
    }
    w.write(s.name, buf);
  }
  w.finish();
  write_file_synced(dir / "config.json", R"({"model_type":"qwen3_moe"})");
  write_file_synced(dir / "tokenizer.json", "{}");
  fmt::print("made {} ({} tensors, {} files)\n", dir.string(), specs.size(), w.files().size());
  return 0;
}

int copy(const fs::path& src, const fs::path& out) {
  const auto t0 = std::chrono::steady_clock::now();
  auto ck = Checkpoint::open(src);
  // Read in file order (shard by shard, by offset): what a streaming pass over a source does.
  std::vector<std::pair<const SafetensorsFile*, const TensorInfo*>> order;
  for (const auto& shard : ck->shards())
    for (const auto& t : shard->tensors()) order.emplace_back(shard.get(), &t);
  std::vector<TensorSpec> specs;
  uint64_t largest = 0, total = 0;
  for (const auto& [f, t] : order) {
    specs.push_back({t->name, t->dtype, t->shape});
    largest = std::max(largest, t->nbytes());
    total += t->nbytes();
  }
  OutputDir od(out, src, /*force=*/true);
  CheckpointWriter w(od.partial(), specs, 1ull << 30);
  // Read-ahead: keep about 64 MiB of upcoming tensors requested from the disk while the current
  // one is written, then hand each tensor's pages back once written.
  constexpr uint64_t kAhead = 64ull << 20;
  size_t next_prefetch = 0;
  uint64_t ahead = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    while (next_prefetch < order.size() && (next_prefetch <= i || ahead < kAhead)) {
      order[next_prefetch].first->prefetch(*order[next_prefetch].second);
      ahead += order[next_prefetch++].second->nbytes();
    }
    const auto& [f, t] = order[i];
    w.write(t->name, f->bytes(*t));
    f->release(*t);
    ahead -= t->nbytes();
  }
  w.finish();
  for (const auto& rel : ck->sidecar_files()) {
    fs::create_directories((od.partial() / rel).parent_path());
    fs::copy_file(ck->dir() / rel, od.partial() / rel);
  }
  fs::copy_file(ck->dir() / "config.json", od.partial() / "config.json");
  od.commit();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  const double rss_mib = ru.ru_maxrss / 1024.0;
  fmt::print("fp4kit-copy bytes={} seconds={:.3f} gbps={:.3f} peak_rss_mib={:.1f} "
             "largest_tensor_mib={:.1f}\n",
             total, secs, total / secs / 1e9, rss_mib, largest / 1048576.0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 4 && std::string(argv[1]) == "make") return make(argv[2], std::atof(argv[3]));
    if (argc == 4 && std::string(argv[1]) == "copy") return copy(argv[2], argv[3]);
    fmt::print(stderr, "usage: bench_io_copy make DIR GIB | copy SRC OUT\n");
    return 2;
  } catch (const Error& e) {
    fmt::print(stderr, "bench_io_copy: error: {}\n", e.what());
    return 1;
  }
}
