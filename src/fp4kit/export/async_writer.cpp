#include "fp4kit/export/async_writer.hpp"

namespace fp4kit {

AsyncWriter::AsyncWriter(CheckpointWriter& writer, uint64_t max_in_flight)
    : writer_(&writer), max_in_flight_(max_in_flight), thread_([this] { run(); }) {}

AsyncWriter::AsyncWriter(uint64_t max_in_flight)
    : writer_(nullptr), max_in_flight_(max_in_flight), thread_([this] { run(); }) {}

void AsyncWriter::post(std::function<void()> job, uint64_t size) {
  Item item;
  item.job = std::move(job);
  item.job_size = size;
  push(std::move(item), size);
}

AsyncWriter::~AsyncWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AsyncWriter::write(std::string name, std::vector<uint8_t> data) {
  const uint64_t size = data.size();
  push(Item{std::move(name), std::move(data), {}, {}}, size);
}

void AsyncWriter::write_part(std::string name, std::vector<uint8_t> data, bool last) {
  const uint64_t size = data.size();
  push(Item{std::move(name), std::move(data), {}, {}, true, last}, size);
}

void AsyncWriter::write_borrowed(std::string name, std::span<const uint8_t> data,
                                 std::function<void()> done) {
  // Borrowed bytes live in the source mapping: they count towards RSS while queued too.
  push(Item{std::move(name), {}, data, std::move(done)}, data.size());
}

void AsyncWriter::push(Item item, uint64_t size) {
  std::unique_lock<std::mutex> lock(mu_);
  // Admit one item even when it alone exceeds the bound, otherwise wait for room.
  cv_.wait(lock, [&] { return error_ || in_flight_ == 0 || in_flight_ + size <= max_in_flight_; });
  if (error_) std::rethrow_exception(error_);
  in_flight_ += size;
  queue_.push_back(std::move(item));
  cv_.notify_all();
}

void AsyncWriter::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return error_ || (queue_.empty() && !busy_); });
  if (error_) std::rethrow_exception(error_);
}

void AsyncWriter::run() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    const uint64_t size = item.job     ? item.job_size
                          : item.owned.empty() ? item.borrowed.size()
                                               : item.owned.size();
    try {
      if (!error_ && item.job) {
        item.job();
      } else if (!error_) {
        const std::span<const uint8_t> bytes =
            item.owned.empty() ? item.borrowed : std::span<const uint8_t>(item.owned);
        if (item.part)
          writer_->write_part(item.name, bytes, item.last);
        else
          writer_->write(item.name, bytes);
        if (item.done) item.done();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_ -= size;
      busy_ = false;
    }
    cv_.notify_all();
  }
}

}  // namespace fp4kit
