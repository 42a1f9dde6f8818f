// fp4kit-nvfp4: runs fp4kit's NVFP4 codec on one raw matrix, for the Python conformance test
// against ModelOpt (python/tests/test_codec_modelopt.py). Not a user tool: no CLI11, tiny parser.
//
//   fp4kit-nvfp4 --in X.bin --rows R --cols K --dtype bf16|f16|f32 --out DIR
//                [--scale-form cpu|gpu] [--s2-bits 0xHHHHHHHH] [--ref] [--scales max|mse]
//
// X.bin holds R*K little-endian elements, row-major. Writes DIR/weight.bin (R*K/2 packed bytes),
// DIR/weight_scale.bin (R*K/16 E4M3 bytes), DIR/weight_scale_2.bin (4 bytes, little-endian f32)
// and prints {"amax_bits": ..., "s2_bits": ...} on stdout.
// s2 is nvfp4_global_scale(tensor_amax(X), form) unless --s2-bits passes it (a fusion group's s2).
// --ref uses the scalar reference kernel instead of the dispatched fast path.
//
//   fp4kit-nvfp4 --dequantize DIR --rows R --cols K
// reads DIR/weight.bin, weight_scale.bin and weight_scale_2.bin (as written above, or taken from a
// checkpoint) and writes DIR/dequant.bin: R*K float32 from nvfp4_dequantize.
// Exit codes: 0 ok, 1 fp4kit::Error (message on stderr), 2 usage.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/dtype.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_search.hpp"

namespace {

int usage(const char* why) {
  std::fprintf(stderr,
               "fp4kit-nvfp4: %s\nusage: fp4kit-nvfp4 --in X.bin --rows R --cols K "
               "--dtype bf16|f16|f32 --out DIR [--scale-form cpu|gpu] [--s2-bits 0xHEX] [--ref]\n",
               why);
  return 2;
}

std::vector<uint8_t> read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw fp4kit::Error("cannot open " + p.string());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::filesystem::path& p, const void* data, size_t n) {
  std::ofstream out(p, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  if (!out) throw fp4kit::Error("cannot write " + p.string());
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt;
  bool use_ref = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--ref") {
      use_ref = true;
    } else if (a.rfind("--", 0) == 0 && i + 1 < argc) {
      opt[a.substr(2)] = argv[++i];
    } else {
      return usage(("unexpected argument " + a).c_str());
    }
  }
  if (opt.count("dequantize")) {
    try {
      const std::filesystem::path dir = opt["dequantize"];
      const size_t rows = std::stoull(opt.at("rows"));
      const size_t cols = std::stoull(opt.at("cols"));
      const auto packed = read_all(dir / "weight.bin");
      const auto scales = read_all(dir / "weight_scale.bin");
      const auto s2_bytes = read_all(dir / "weight_scale_2.bin");
      if (cols % fp4kit::kNvfp4Block != 0 || packed.size() != rows * cols / 2 ||
          scales.size() != rows * (cols / fp4kit::kNvfp4Block) || s2_bytes.size() != 4)
        throw fp4kit::Error("inputs in " + dir.string() + " do not match rows x cols");
      float s2;
      std::memcpy(&s2, s2_bytes.data(), 4);
      std::vector<float> out(rows * cols);
      fp4kit::nvfp4_dequantize(packed.data(), scales.data(), rows, cols, s2, out.data());
      write_all(dir / "dequant.bin", out.data(), out.size() * sizeof(float));
      return 0;
    } catch (const std::out_of_range&) {
      return usage("--dequantize needs --rows and --cols");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fp4kit-nvfp4: error: %s\n", e.what());
      return 1;
    }
  }
  for (const char* k : {"in", "rows", "cols", "dtype", "out"})
    if (!opt.count(k)) return usage((std::string("missing --") + k).c_str());

  fp4kit::DType dtype;
  if (opt["dtype"] == "bf16") dtype = fp4kit::DType::BF16;
  else if (opt["dtype"] == "f16") dtype = fp4kit::DType::F16;
  else if (opt["dtype"] == "f32") dtype = fp4kit::DType::F32;
  else return usage("--dtype must be bf16, f16 or f32");

  fp4kit::ScaleForm form = fp4kit::ScaleForm::Gpu;
  if (opt.count("scale-form")) {
    if (opt["scale-form"] == "cpu") form = fp4kit::ScaleForm::Cpu;
    else if (opt["scale-form"] != "gpu") return usage("--scale-form must be cpu or gpu");
  }

  try {
    const size_t rows = std::stoull(opt["rows"]);
    const size_t cols = std::stoull(opt["cols"]);
    const std::vector<uint8_t> src = read_all(opt["in"]);
    if (src.size() != rows * cols * fp4kit::dtype_size(dtype))
      throw fp4kit::Error("input " + opt["in"] + " holds " + std::to_string(src.size()) +
                          " bytes, expected rows*cols*elemsize");

    const float amax = fp4kit::tensor_amax(src.data(), dtype, rows, cols);
    float s2;
    if (opt.count("s2-bits")) {
      const uint32_t u = static_cast<uint32_t>(std::stoul(opt["s2-bits"], nullptr, 16));
      std::memcpy(&s2, &u, 4);
    } else {
      s2 = fp4kit::nvfp4_global_scale(amax, form);
    }

    std::vector<uint8_t> packed(rows * cols / 2), scales(rows * (cols / fp4kit::kNvfp4Block));
    const bool mse = opt.count("scales") && opt["scales"] == "mse";
    if (opt.count("scales") && !mse && opt["scales"] != "max") return usage("--scales max|mse");
    if (mse && use_ref)
      fp4kit::nvfp4_quantize_search_ref(src.data(), dtype, rows, cols, s2, {}, packed.data(),
                                        scales.data());
    else if (mse)
      fp4kit::nvfp4_quantize_search(src.data(), dtype, rows, cols, s2, {}, packed.data(),
                                    scales.data());
    else if (use_ref)
      fp4kit::nvfp4_quantize_ref(src.data(), dtype, rows, cols, s2, packed.data(), scales.data());
    else
      fp4kit::nvfp4_quantize(src.data(), dtype, rows, cols, s2, packed.data(), scales.data());

    const std::filesystem::path out = opt["out"];
    std::filesystem::create_directories(out);
    write_all(out / "weight.bin", packed.data(), packed.size());
    write_all(out / "weight_scale.bin", scales.data(), scales.size());
    write_all(out / "weight_scale_2.bin", &s2, 4);  // little-endian hosts only (x86, aarch64)
    std::printf("{\"amax_bits\": %u, \"s2_bits\": %u}\n", bits_of(amax), bits_of(s2));
    return 0;
  } catch (const fp4kit::Error& e) {
    std::fprintf(stderr, "fp4kit-nvfp4: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fp4kit-nvfp4: error: %s\n", e.what());
    return 1;
  }
}
