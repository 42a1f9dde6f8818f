// transpose_bytes (quant/bmm_experts.hpp), the BMM experts' layout change: against the index
// definition out[c * rows + r] = in[r * cols + c], for every element size and for shapes that
// are and are not multiples of the tile (64) and of the 8-byte blocks.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/quant/bmm_experts.hpp"

namespace fp4kit {
namespace {

TEST(TransposeBytes, MatchesTheIndexDefinition) {
  uint64_t seed = 0x1234567;
  for (size_t elem : {1, 2, 4}) {
    for (auto [rows, cols] : std::vector<std::pair<uint64_t, uint64_t>>{
             {1, 1}, {8, 8}, {4, 4}, {7, 9}, {64, 64}, {65, 63}, {128, 72}, {200, 33}, {3, 257},
             {1440, 96}}) {
      std::vector<uint8_t> in(rows * cols * elem), out(in.size(), 0xEE);
      for (auto& b : in) b = static_cast<uint8_t>((seed = seed * 6364136223846793005ull + 1) >> 56);
      transpose_bytes(in.data(), rows, cols, elem, out.data());
      uint64_t bad = 0;
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t c = 0; c < cols; ++c)
          bad += std::memcmp(out.data() + (c * rows + r) * elem, in.data() + (r * cols + c) * elem,
                             elem) != 0;
      EXPECT_EQ(bad, 0u) << "elem " << elem << " shape " << rows << "x" << cols;
    }
  }
}

TEST(TransposeBytes, OtherElementSizesAreAnError) {
  std::vector<uint8_t> a(24), b(24);
  EXPECT_THROW(transpose_bytes(a.data(), 2, 4, 3, b.data()), Error);
}

}  // namespace
}  // namespace fp4kit
