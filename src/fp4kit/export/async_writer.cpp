#include "fp4kit/export/async_writer.hpp"

#include <algorithm>
#include <atomic>
#include <memory>

#include "fp4kit/io/phase_trace.hpp"
#include "fp4kit/io/write_tuning.hpp"

namespace fp4kit {

AsyncWriter::AsyncWriter(CheckpointWriter& writer, uint64_t max_in_flight, unsigned threads)
    : writer_(&writer), max_in_flight_(max_in_flight) {
  start(threads ? threads : write_tuning().writers);
}

AsyncWriter::AsyncWriter(uint64_t max_in_flight) : writer_(nullptr), max_in_flight_(max_in_flight) {
  start(1);
}

void AsyncWriter::start(unsigned threads) {
  for (unsigned i = 0; i < std::max(1u, threads); ++i) threads_.emplace_back([this] { run(); });
}

AsyncWriter::~AsyncWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void AsyncWriter::post(std::function<void()> job, uint64_t size) {
  Item item;
  item.job = std::move(job);
  item.job_size = size;
  push(std::move(item));
}

void AsyncWriter::write(std::string name, std::vector<uint8_t> data) {
  push(Item{std::move(name), std::move(data), {}, {}});
}

void AsyncWriter::write_part(std::string name, std::vector<uint8_t> data, bool last) {
  push(Item{std::move(name), std::move(data), {}, {}, last});
}

void AsyncWriter::write_borrowed(std::string name, std::span<const uint8_t> data,
                                 std::function<void()> done) {
  // Borrowed bytes live in the source mapping: they count towards RSS while queued too.
  push(Item{std::move(name), {}, data, std::move(done)});
}

void AsyncWriter::write_borrowed_pieces(std::string name, std::span<const uint8_t> data,
                                        uint64_t piece, std::function<void()> done) {
  if (piece == 0 || data.size() <= piece)
    return write_borrowed(std::move(name), data, std::move(done));
  const size_t n = static_cast<size_t>((data.size() + piece - 1) / piece);
  // The last piece to be written (in any order) runs `done`.
  auto left = std::make_shared<std::atomic<size_t>>(n);
  auto fin = std::make_shared<std::function<void()>>(std::move(done));
  for (size_t i = 0; i < n; ++i) {
    const size_t b = static_cast<size_t>(i * piece);
    const size_t e = std::min(data.size(), static_cast<size_t>(b + piece));
    Item item;
    item.name = name;
    item.borrowed = data.subspan(b, e - b);
    item.done = [left, fin] {
      if (left->fetch_sub(1) == 1 && *fin) (*fin)();
    };
    item.last = i + 1 == n;
    push(std::move(item));
  }
}

void AsyncWriter::push(Item item) {
  const uint64_t size = item.size();
  std::unique_lock<std::mutex> lock(mu_);
  // Admit one item even when it alone exceeds the bound, otherwise wait for room.
  auto room = [&] { return error_ || in_flight_ == 0 || in_flight_ + size <= max_in_flight_; };
  if (!room()) {
    TraceScope trace(TraceTotal::StreamBlocked);
    cv_.wait(lock, room);
  }
  if (error_) std::rethrow_exception(error_);
  // A tensor's place in the output is taken here, in the order of the calls (which checks the
  // order and the size).
  if (!item.job) item.slot = writer_->reserve(item.name, size, item.last);
  in_flight_ += size;
  queue_.push_back(std::move(item));
  cv_.notify_all();
}

void AsyncWriter::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return error_ || (queue_.empty() && busy_ == 0); });
  if (error_) std::rethrow_exception(error_);
}

void AsyncWriter::run() {
  for (;;) {
    Item item;
    bool skip;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      ++busy_;
      skip = static_cast<bool>(error_);
    }
    try {
      if (!skip && item.job) {
        item.job();
      } else if (!skip) {
        const std::span<const uint8_t> bytes =
            item.owned.empty() ? item.borrowed : std::span<const uint8_t>(item.owned);
        writer_->write_at(item.slot, bytes);
        if (item.done) item.done();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_ -= item.size();
      --busy_;
    }
    cv_.notify_all();
  }
}

}  // namespace fp4kit
