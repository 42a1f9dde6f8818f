#pragma once
// Overlaps writing with quantization: a writer thread drains a queue bounded by bytes in flight,
// so the stream never holds more than `max_in_flight` bytes of finished output. The queue holds
// tensors for a CheckpointWriter, or jobs (--format gguf: repack and write one piece).
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
  AsyncWriter(CheckpointWriter& writer, uint64_t max_in_flight);
  explicit AsyncWriter(uint64_t max_in_flight);  // jobs only
  ~AsyncWriter();  // joins; never throws

  // Queues an owned buffer.
  void write(std::string name, std::vector<uint8_t> data);
  // Queues one piece of a tensor written in pieces (CheckpointWriter::write_part).
  void write_part(std::string name, std::vector<uint8_t> data, bool last);
  // Queues a borrowed span (must outlive the write); `done` runs after it was written.
  void write_borrowed(std::string name, std::span<const uint8_t> data,
                      std::function<void()> done = {});
  // Queues a job holding `size` bytes of output (run on the writer thread, in order).
  void post(std::function<void()> job, uint64_t size);
  // Waits until everything is written; rethrows the writer thread's first error.
  void drain();

 private:
  struct Item {
    std::string name;
    std::vector<uint8_t> owned;
    std::span<const uint8_t> borrowed;
    std::function<void()> done;
    bool part = false;  // a piece of a tensor; `last` closes it
    bool last = true;
    std::function<void()> job = nullptr;  // instead of a tensor
    uint64_t job_size = 0;
  };
  void push(Item item, uint64_t size);
  void run();

  CheckpointWriter* writer_;
  uint64_t max_in_flight_;
  uint64_t in_flight_ = 0;
  std::deque<Item> queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool busy_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace fp4kit
