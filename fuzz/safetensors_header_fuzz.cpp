// libFuzzer target: a whole safetensors file image through the header-length check and the
// header parser. Any input must either parse into tensors that satisfy every rule of the format,
// or throw fp4kit::Error; anything else (crash, sanitizer report, other exception) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "fp4kit/error.hpp"
#include "fp4kit/io/safetensors_reader.hpp"

namespace {
void require(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fp4kit;
  uint64_t data_offset = 0;
  try {
    SafetensorsHeader h =
        parse_safetensors_image(std::span<const uint8_t>(data, size), "fuzz.safetensors", &data_offset);
    // What a successful parse promises its users:
    require(data_offset >= 8 && data_offset <= size);
    const uint64_t data_size = size - data_offset;
    uint64_t covered = 0;
    for (const auto& t : h.tensors) {
      require(t.begin == covered && t.begin <= t.end && t.end <= data_size);
      require(t.numel() * dtype_size(t.dtype) == t.nbytes());
      covered = t.end;
    }
    require(covered == data_size);
  } catch (const Error&) {
    // rejected with a message: fine
  }
  return 0;
}
