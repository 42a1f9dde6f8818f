#pragma once
// Overlaps writing with quantization: writer threads drain a queue bounded by bytes in flight, so
// the stream never holds more than `max_in_flight` bytes of finished output. The queue holds
// tensors for a CheckpointWriter, each given its place in the output when queued (in order) and
// written there by one of several threads in parallel; or jobs (--format gguf: repack and write
// one piece), run in order on one thread.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "fp4kit/io/safetensors_writer.hpp"

namespace fp4kit {

class AsyncWriter {
 public:
  // threads = 0: write_tuning().writers (io/write_tuning.hpp).
  AsyncWriter(CheckpointWriter& writer, uint64_t max_in_flight, unsigned threads = 0);
  explicit AsyncWriter(uint64_t max_in_flight);  // jobs only (one thread)
  ~AsyncWriter();  // joins; never throws

  // Queues an owned buffer.
  void write(std::string name, std::vector<uint8_t> data);
  // Queues one piece of a tensor written in pieces (CheckpointWriter::write_part).
  void write_part(std::string name, std::vector<uint8_t> data, bool last);
  // Queues a borrowed span (must outlive the write); `done` runs after it was written.
  void write_borrowed(std::string name, std::span<const uint8_t> data,
                      std::function<void()> done = {});
  // Queues a borrowed tensor in pieces of at most `piece` bytes, which several writer threads
  // copy at once; `done` runs once, after every piece was written.
  void write_borrowed_pieces(std::string name, std::span<const uint8_t> data, uint64_t piece,
                             std::function<void()> done = {});
  // Queues a job holding `size` bytes of output (run on the writer thread, in order).
  void post(std::function<void()> job, uint64_t size);
  // Waits until everything is written; rethrows the writer threads' first error.
  void drain();

 private:
  struct Item {
    std::string name;
    std::vector<uint8_t> owned;
    std::span<const uint8_t> borrowed;
    std::function<void()> done;
    bool last = true;  // a piece of a tensor closes it
    CheckpointWriter::Slot slot;
    std::function<void()> job = nullptr;  // instead of a tensor
    uint64_t job_size = 0;
    uint64_t size() const {
      return job ? job_size : owned.empty() ? borrowed.size() : owned.size();
    }
  };
  void push(Item item);
  void start(unsigned threads);
  void run();

  CheckpointWriter* writer_;
  uint64_t max_in_flight_;
  uint64_t in_flight_ = 0;
  std::deque<Item> queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  unsigned busy_ = 0;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

}  // namespace fp4kit
