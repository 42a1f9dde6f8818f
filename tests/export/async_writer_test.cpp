// The writer queue: owned buffers are bounded by bytes in flight, borrowed source bytes are not
// (queued, they take no memory), so the stream goes on quantizing while a large kept tensor is
// being copied; the file holds every tensor in order either way.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>

#include "fp4kit/export/async_writer.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::TempDir;

TEST(AsyncWriter, BorrowedBytesDoNotHoldUpTheStream) {
  TempDir dir;
  const std::string big(1000, 'b'), big2(1000, 'c');
  CheckpointWriter w(dir.path(), {{"kept", DType::U8, {1000}},
                                  {"kept2", DType::U8, {1000}},
                                  {"quantized", DType::U8, {8}}});
  std::promise<void> pushed_all;
  std::future<void> pushed = pushed_all.get_future();
  bool writer_waited_in_vain = false;
  {
    AsyncWriter async(w, /*max_in_flight=*/16);
    // The writer thread stays inside the first borrowed write until everything is queued: if a
    // borrowed tensor counted against the 16-byte bound, the pushes below would wait for it.
    async.write_borrowed(
        "kept", {reinterpret_cast<const uint8_t*>(big.data()), big.size()}, [&] {
          writer_waited_in_vain = pushed.wait_for(std::chrono::seconds(5)) !=
                                  std::future_status::ready;
        });
    async.write_borrowed("kept2", {reinterpret_cast<const uint8_t*>(big2.data()), big2.size()});
    async.write("quantized", std::vector<uint8_t>(8, 'q'));
    pushed_all.set_value();
    async.drain();
  }
  EXPECT_FALSE(writer_waited_in_vain) << "a borrowed tensor held up the queue";
  w.finish();
  auto ck = Checkpoint::open(dir.path());
  auto b = ck->bytes("kept2");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()), big2);
  auto q = ck->bytes("quantized");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(q.data()), q.size()), "qqqqqqqq");
}

}  // namespace
}  // namespace fp4kit
