#include "fp4kit/io/safetensors_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/core.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include "fp4kit/error.hpp"
#include "fp4kit/io/file_sync.hpp"
#include "fp4kit/io/phase_trace.hpp"
#include "fp4kit/io/write_tuning.hpp"

namespace fp4kit {

namespace fs = std::filesystem;

uint64_t TensorSpec::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (uint64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n))
      throw Error(fmt::format("tensor \"{}\": shape product x {} bytes overflows 64 bits", name,
                              dtype_size(dtype)));
  return n;
}

namespace {

// Write-behind: every writeback_window() bytes (32 MiB) that arrived in a shard, the kernel is
// told to start writing them out (asynchronously: the disk gets a deep queue from the first window
// on, and the final fsync has only what the disk has not caught up with yet). Dirty data stays bounded: bytes
// more than dirty_lag() behind are waited for (a 1 TB model must not fill RAM with dirty pages and
// stall in the kernel's dirty throttling), and, when the whole checkpoint is large next to RAM,
// dropped from the page cache once on disk.
uint64_t writeback_window() { return write_tuning().writeback_window; }
// Completed shards are fsynced by background threads; at most this many at once.
constexpr size_t kMaxPendingSyncs = 4;

uint64_t physical_ram() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page)
                               : uint64_t{8} << 30;
}
// 1 GiB, or RAM / 16 on a small machine (never below two windows).
uint64_t dirty_lag() {
  if (write_tuning().dirty_lag) return std::max(2 * writeback_window(), write_tuning().dirty_lag);
  return std::max(2 * writeback_window(), std::min(uint64_t{1} << 30, physical_ram() / 16));
}

std::string json_string(const std::string& s, std::string_view what) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    throw Error(fmt::format("{} \"{}\" is not valid UTF-8", what, s));
  }
}

struct ShardLayout {
  std::string file_name;
  std::vector<size_t> tensors;  // indices into the declared list, in order
  uint64_t data_bytes = 0;
};

// A shard's file while it is written: bytes arrive from several threads, in any order.
struct ShardFile {
  int fd = -1;
  fs::path path;
  uint64_t data_start = 0;  // 8 + header length
  uint64_t total = 0;       // data_start + data bytes: the file's size
  // Guarded by Impl::mu.
  uint64_t arrived = 0;  // bytes written so far (the shard is complete at `total`)
  uint64_t high = 0;     // end of the furthest write
  // Guarded by `wb`: the write-behind state, and the hand-off of fd to the fsync thread.
  std::mutex wb;
  uint64_t kicked = 0;   // [0, kicked) has been handed to writeback
  uint64_t settled = 0;  // [0, settled) is on disk (and, for a large checkpoint, dropped)
  bool handed_off = false;
};

}  // namespace

struct CheckpointWriter::Impl {
  fs::path dir;
  std::vector<TensorSpec> specs;
  std::vector<uint64_t> sizes;
  std::vector<size_t> shard_of;
  std::vector<uint64_t> offset_in_shard;  // of each tensor, from its shard's data start
  std::vector<ShardLayout> shards;
  std::map<std::string, std::string> metadata;
  std::vector<fs::path> files;

  // reserve()'s state: one caller at a time.
  size_t next = 0;         // next tensor expected
  uint64_t part_done = 0;  // bytes of tensor `next` reserved so far by pieces
  bool finished = false;
  bool writing_done = false;  // finish_writing() ran: only wait_durable() is left
  std::atomic<bool> failed{false};
  uint64_t lag = dirty_lag();
  bool drop_cache = false;  // the checkpoint is large next to RAM: keep the page cache small

  // One per shard, made up front (write_at() on other threads reads them while reserve() opens
  // the next); opened in order, the first `opened`.
  std::vector<std::unique_ptr<ShardFile>> files_open;
  size_t opened = 0;
  std::mutex mu;

  // fsync + close of completed shards, in background threads (the stream goes on meanwhile).
  std::deque<std::thread> syncs;
  std::mutex syncs_mu;
  std::mutex error_mu;
  std::exception_ptr sync_error;

  void start_sync(int f, fs::path path) {
    for (;;) {
      std::thread oldest;
      {
        std::lock_guard<std::mutex> lock(syncs_mu);
        if (syncs.size() < kMaxPendingSyncs) {
          syncs.emplace_back([this, f, path = std::move(path)] {
            const int rc = ::fsync(f), err = errno;
            const int crc = ::close(f), cerr = errno;
            if (rc == 0 && crc == 0) return;
            std::lock_guard<std::mutex> elock(error_mu);
            if (!sync_error)
              sync_error = std::make_exception_ptr(Error(fmt::format(
                  "{}: {} failed: {}", path.string(), rc != 0 ? "fsync" : "close",
                  std::strerror(rc != 0 ? err : cerr))));
          });
          return;
        }
        oldest = std::move(syncs.front());
        syncs.pop_front();
      }
      oldest.join();
    }
  }
  void join_syncs() {
    std::deque<std::thread> all;
    {
      std::lock_guard<std::mutex> lock(syncs_mu);
      all.swap(syncs);
    }
    for (auto& t : all) t.join();
  }
  void rethrow_sync_error() {
    std::lock_guard<std::mutex> lock(error_mu);
    if (sync_error) {
      failed = true;
      std::rethrow_exception(sync_error);
    }
  }

  std::string header_for(const ShardLayout& shard) const {
    std::string h = "{";
    bool first = true;
    if (!metadata.empty()) {
      h += "\"__metadata__\":{";
      bool f = true;
      for (const auto& [k, v] : metadata) {
        if (!f) h += ',';
        h += json_string(k, "metadata key");
        h += ':';
        h += json_string(v, "metadata value");
        f = false;
      }
      h += "}";
      first = false;
    }
    uint64_t offset = 0;
    for (size_t i : shard.tensors) {
      const TensorSpec& t = specs[i];
      h += first ? "" : ",";
      first = false;
      h += json_string(t.name, "tensor name");
      h += fmt::format(":{{\"dtype\":\"{}\",\"shape\":[", dtype_name(t.dtype));
      for (size_t d = 0; d < t.shape.size(); ++d) {
        if (d) h += ',';
        h += std::to_string(t.shape[d]);
      }
      h += fmt::format("],\"data_offsets\":[{},{}]}}", offset, offset + sizes[i]);
      offset += sizes[i];
    }
    h += "}";
    // The format asks for the data area to start 8-byte aligned: pad with spaces.
    h.append((8 - h.size() % 8) % 8, ' ');
    return h;
  }

  // Writes all of `data` at `offset` (any thread); a failure marks the writer failed.
  void pwrite_all(ShardFile& s, const uint8_t* p, size_t n, uint64_t offset) {
    TraceScope trace(TraceTotal::WriterCopy);
    while (n > 0) {
      const ssize_t w = ::pwrite(s.fd, p, n, static_cast<off_t>(offset));
      if (w <= 0) {
        if (w < 0 && errno == EINTR) continue;
        const int err = w < 0 ? errno : ENOSPC;
        failed = true;
        throw Error(fmt::format("{}: write failed: {}", s.path.string(), std::strerror(err)));
      }
      p += w;
      n -= static_cast<size_t>(w);
      offset += static_cast<uint64_t>(w);
    }
  }

  // Counts `n` bytes ending at `end` as arrived in shard `k`: starts write-behind, and hands a
  // completed shard to a background fsync.
  void arrived(size_t k, uint64_t end, uint64_t n) {
    ShardFile& s = *files_open[k];
    bool complete;
    {
      std::lock_guard<std::mutex> lock(mu);
      s.arrived += n;
      s.high = std::max(s.high, end);
      complete = s.arrived == s.total;
    }
    if (complete)
      close_shard(s);
    else
      write_behind(s);
  }

  void write_behind(ShardFile& s) {
    std::unique_lock<std::mutex> wb(s.wb, std::try_to_lock);
    if (!wb.owns_lock() || s.handed_off) return;  // another thread is at it
    uint64_t high;
    {
      std::lock_guard<std::mutex> lock(mu);
      high = s.high;
    }
    if (high < s.kicked + writeback_window()) return;
    // Start writeback of the new window (asynchronous; pages of it still to come are written
    // by a later window or the fsync).
    if (::sync_file_range(s.fd, static_cast<off_t>(s.kicked), static_cast<off_t>(high - s.kicked),
                          SYNC_FILE_RANGE_WRITE) != 0)
      return;  // not supported here: the fsync at the end still makes the file durable
    s.kicked = high;
    // Wait for everything more than `lag` behind, then (large checkpoints) drop those pages.
    if (s.kicked - s.settled > lag) {
      TraceScope trace(TraceTotal::WritebackWait);
      const uint64_t upto = s.kicked - lag;
      if (::sync_file_range(s.fd, static_cast<off_t>(s.settled),
                            static_cast<off_t>(upto - s.settled),
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
        const int err = errno;
        failed = true;
        throw Error(
            fmt::format("{}: writing to disk failed: {}", s.path.string(), std::strerror(err)));
      }
      if (drop_cache)
        ::posix_fadvise(s.fd, static_cast<off_t>(s.settled), static_cast<off_t>(upto - s.settled),
                        POSIX_FADV_DONTNEED);
      s.settled = upto;
    }
  }

  // Every byte of the shard arrived: hand it to a background fsync (wait_durable() waits for it
  // and reports failures).
  void close_shard(ShardFile& s) {
    std::lock_guard<std::mutex> wb(s.wb);
    // Start write-out of the tail now, so the fsync finds it under way.
    ::sync_file_range(s.fd, static_cast<off_t>(s.kicked), 0, SYNC_FILE_RANGE_WRITE);
    s.handed_off = true;
    const int f = s.fd;
    s.fd = -1;
    start_sync(f, s.path);
  }

  // Creates shard k's file and writes its header (reserve()'s thread).
  void open_shard(size_t k) {
    const ShardLayout& layout = shards[k];
    ShardFile* s = files_open[k].get();
    s->path = dir / layout.file_name;
    s->fd = ::open(s->path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0) {
      failed = true;
      throw Error(fmt::format("{}: cannot create: {}", s->path.string(), std::strerror(errno)));
    }
    files.push_back(s->path);
    const std::string h = header_for(layout);
    std::string head(8, '\0');
    for (int i = 0; i < 8; ++i) head[i] = static_cast<char>(uint64_t(h.size()) >> (8 * i));
    head += h;
    s->data_start = head.size();
    s->total = head.size() + layout.data_bytes;
    ShardFile& ref = *s;
    opened = k + 1;
    pwrite_all(ref, reinterpret_cast<const uint8_t*>(head.data()), head.size(), 0);
    arrived(k, head.size(), head.size());
  }
};

CheckpointWriter::CheckpointWriter(fs::path dir, std::vector<TensorSpec> tensors,
                                   uint64_t max_shard_bytes,
                                   std::map<std::string, std::string> metadata)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dir = std::move(dir);
  m.specs = std::move(tensors);
  m.metadata = std::move(metadata);
  if (max_shard_bytes == 0) throw Error("maximum shard size must be at least 1 byte");
  std::set<std::string_view> seen;
  for (const auto& t : m.specs) {
    if (t.name.empty()) throw Error("a tensor with an empty name cannot be written");
    if (t.name == "__metadata__") throw Error("\"__metadata__\" is reserved, not a tensor name");
    if (!seen.insert(t.name).second)
      throw Error(fmt::format("tensor \"{}\" declared twice for writing", t.name));
    m.sizes.push_back(t.nbytes());
  }

  // Same rule as huggingface_hub's split_state_dict_into_shards: a tensor that does not fit in
  // the current shard starts a new one; a tensor larger than the maximum gets a shard of its own.
  std::vector<ShardLayout> shards(1);
  for (size_t i = 0; i < m.specs.size(); ++i) {
    ShardLayout* cur = &shards.back();
    const bool full = cur->data_bytes + m.sizes[i] > max_shard_bytes ||
                      cur->data_bytes + m.sizes[i] < cur->data_bytes;  // wrap-around
    if (!cur->tensors.empty() && full) {
      shards.emplace_back();
      cur = &shards.back();
    }
    cur->tensors.push_back(i);
    m.offset_in_shard.push_back(cur->data_bytes);
    cur->data_bytes += m.sizes[i];
    m.shard_of.push_back(shards.size() - 1);
  }
  const size_t n = shards.size();
  for (size_t s = 0; s < n; ++s)
    shards[s].file_name = n == 1 ? "model.safetensors"
                                 : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, n);
  m.shards = std::move(shards);
  for (const auto& s : m.shards) m.header_for(s);  // reject bad names now, not mid-stream
  for (size_t k = 0; k < m.shards.size(); ++k) m.files_open.push_back(std::make_unique<ShardFile>());
  uint64_t total = 0;
  for (uint64_t sz : m.sizes) total += sz;
  m.drop_cache = total > physical_ram() / 8;
}

CheckpointWriter::~CheckpointWriter() {
  if (!impl_) return;
  impl_->join_syncs();
  for (auto& s : impl_->files_open)
    if (s->fd >= 0) ::close(s->fd);  // unfinished: the OutputDir discards it
}

void CheckpointWriter::write(std::string_view name, std::span<const uint8_t> data) {
  write_part(name, data, /*last=*/true);
}

void CheckpointWriter::write_part(std::string_view name, std::span<const uint8_t> data,
                                  bool last) {
  write_at(reserve(name, data.size(), last), data);
}

CheckpointWriter::Slot CheckpointWriter::reserve(std::string_view name, uint64_t size,
                                                 bool last) {
  Impl& m = *impl_;
  m.rethrow_sync_error();
  if (m.failed) throw Error(fmt::format("tensor \"{}\": the writer failed earlier", name));
  if (m.finished || m.writing_done || m.next >= m.specs.size())
    throw Error(fmt::format("tensor \"{}\" written after all declared tensors", name));
  const TensorSpec& t = m.specs[m.next];
  if (t.name != name)
    throw Error(fmt::format("tensor \"{}\" written out of order: \"{}\" is next{}", name, t.name,
                            m.part_done ? " (and only partly written)" : ""));
  const uint64_t total = m.part_done + size;
  if (total > m.sizes[m.next] || total < size || (last && total != m.sizes[m.next]))
    throw Error(fmt::format("tensor \"{}\": {} bytes written but {} {} needs {}", name,
                            total, dtype_name(t.dtype),
                            fmt::format("[{}]", fmt::join(t.shape, ",")),
                            m.sizes[m.next]));
  const size_t shard = m.shard_of[m.next];
  while (m.opened <= shard) m.open_shard(m.opened);
  Slot slot{shard, m.files_open[shard]->data_start + m.offset_in_shard[m.next] + m.part_done,
            size};
  m.part_done = total;
  if (last) {
    m.part_done = 0;
    ++m.next;
  }
  return slot;
}

void CheckpointWriter::write_at(const Slot& slot, std::span<const uint8_t> data) {
  Impl& m = *impl_;
  if (data.size() != slot.size)
    throw Error(fmt::format("{} bytes for a slot of {} (internal error)", data.size(), slot.size));
  if (m.failed) throw Error("checkpoint writer: it failed earlier");
  if (data.empty()) return;
  ShardFile& s = *m.files_open[slot.shard];
  m.pwrite_all(s, data.data(), data.size(), slot.offset);
  m.arrived(slot.shard, slot.offset + data.size(), data.size());
}

void CheckpointWriter::finish() {
  finish_writing();
  wait_durable();
}

void CheckpointWriter::finish_writing() {
  Impl& m = *impl_;
  if (m.failed) throw Error("checkpoint writer: cannot finish after an earlier failure");
  if (m.finished || m.writing_done) return;
  if (m.next < m.specs.size() && m.part_done > 0)
    throw Error(fmt::format("tensor \"{}\" was only partly written ({} of {} bytes)",
                            m.specs[m.next].name, m.part_done, m.sizes[m.next]));
  if (m.next < m.specs.size())
    throw Error(fmt::format("tensor \"{}\" was declared but never written ({} of {} missing)",
                            m.specs[m.next].name, m.specs.size() - m.next, m.specs.size()));
  if (m.opened == 0) m.open_shard(0);  // no tensors: a header-only file
  {
    std::lock_guard<std::mutex> lock(m.mu);
    for (size_t k = 0; k < m.opened; ++k)
      if (const auto& s = m.files_open[k]; s->arrived != s->total)
        throw Error(fmt::format("{}: {} of {} bytes arrived (a reserved tensor was not written)",
                                s->path.string(), s->arrived, s->total));
  }

  if (m.shards.size() > 1) {
    nlohmann::json index;
    uint64_t total = 0;
    for (uint64_t s : m.sizes) total += s;
    index["metadata"]["total_size"] = total;
    index["weight_map"] = nlohmann::json::object();  // std::map inside: sorted by name
    for (size_t i = 0; i < m.specs.size(); ++i)
      index["weight_map"][m.specs[i].name] = m.shards[m.shard_of[i]].file_name;
    const fs::path p = m.dir / "model.safetensors.index.json";
    write_file_synced(p, index.dump(2) + "\n");
    m.files.push_back(p);
  }
  m.writing_done = true;
}

void CheckpointWriter::wait_durable() {
  Impl& m = *impl_;
  if (m.finished) return;
  if (!m.writing_done) throw Error("checkpoint writer: wait_durable() before finish_writing()");
  m.join_syncs();
  m.rethrow_sync_error();
  sync_directory(m.dir);
  m.finished = true;
}

const std::vector<fs::path>& CheckpointWriter::files() const { return impl_->files; }

}  // namespace fp4kit
