// fp4kit-source-decode: exposes the source-format decoders (FP8 block-scaled, MXFP4) on raw
// little-endian files, for the Python conformance test against transformers' dequantizers.
//   fp4kit-source-decode fp8 N K BLOCK_ROWS BLOCK_COLS codes.u8 scale_inv.f32 out.f32
//   fp4kit-source-decode mxfp4 GROUPS blocks.u8 scales.u8 out.f32
//   fp4kit-source-decode packed-int CHECKPOINT MODULE out.f32   (compressed-tensors pack-quantized:
//       the module's [n, k] float32 values as quantize, calibrate and verify decode them)
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/packed_int.hpp"
#include "fp4kit/numeric/source_formats.hpp"

namespace {
std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw fp4kit::Error("cannot read " + path);
  return {std::istreambuf_iterator<char>(f), {}};
}
void write_all(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  if (!f) throw fp4kit::Error("cannot write " + path);
}
}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> a(argv + 1, argv + argc);
    if (a.size() == 8 && a[0] == "fp8") {
      const size_t n = std::stoul(a[1]), k = std::stoul(a[2]);
      const auto codes = read_all(a[5]);
      const auto scales = read_all(a[6]);
      if (codes.size() != n * k) throw fp4kit::Error("codes file size differs from N*K");
      fp4kit::Fp8BlockScales s;
      s.data = scales.data();
      s.dtype = fp4kit::DType::F32;
      s.block_rows = std::stoul(a[3]);
      s.block_cols = std::stoul(a[4]);
      s.grid_rows = (n + s.block_rows - 1) / s.block_rows;
      s.grid_cols = (k + s.block_cols - 1) / s.block_cols;
      if (scales.size() != s.grid_rows * s.grid_cols * 4)
        throw fp4kit::Error("scale file size differs from the grid");
      std::vector<float> out(n * k);
      fp4kit::fp8_block_dequantize(codes.data(), 0, n, n, k, s, out.data(), a[5]);
      write_all(a[7], out);
      return 0;
    }
    if (a.size() == 5 && a[0] == "mxfp4") {
      const size_t g = std::stoul(a[1]);
      const auto blocks = read_all(a[2]);
      const auto scales = read_all(a[3]);
      if (blocks.size() != g * 16 || scales.size() != g)
        throw fp4kit::Error("blocks/scales file sizes differ from GROUPS");
      std::vector<float> out(g * fp4kit::kMxfp4Block);
      fp4kit::mxfp4_dequantize(blocks.data(), scales.data(), g, out.data(), a[3]);
      write_all(a[4], out);
      return 0;
    }
    if (a.size() == 4 && a[0] == "packed-int") {
      const auto ckpt = fp4kit::Checkpoint::open(a[1]);
      const fp4kit::PackedIntWeight w = fp4kit::packed_int_weight(*ckpt, a[2]);
      std::vector<float> out(w.rows * w.cols);
      fp4kit::decode_packed_int(*ckpt, w, 0, w.rows, out.data());
      write_all(a[3], out);
      std::printf("%llu %llu %d %llu\n", static_cast<unsigned long long>(w.rows),
                  static_cast<unsigned long long>(w.cols), w.bits,
                  static_cast<unsigned long long>(w.group));
      return 0;
    }
    std::fprintf(stderr,
                 "usage: fp4kit-source-decode fp8 N K BR BC codes scale_inv out\n"
                 "       fp4kit-source-decode mxfp4 GROUPS blocks scales out\n"
                 "       fp4kit-source-decode packed-int CHECKPOINT MODULE out\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
