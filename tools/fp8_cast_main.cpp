// fp4kit-fp8-cast: writes an FP8 block-scaled copy of a BF16/F16/F32 checkpoint, the way
// DeepSeek-V3 / Qwen3-FP8 ship theirs: every 2-D "*_proj.weight" (and "w1/w2/w3") becomes F8_E4M3
// codes plus an F32 "<m>.weight_scale_inv" [ceil(N/128), ceil(K/128)] with scale = block amax / 448;
// everything else is copied. config.json gets quantization_config {quant_method: fp8,
// weight_block_size: [128, 128]}. For benchmarks of the FP8 -> NVFP4 path (bench/quantize_fp8_e2e.sh).
//   fp4kit-fp8-cast SRC OUT [--shard-gb N]
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace {
using namespace fp4kit;
namespace fs = std::filesystem;

bool cast_it(const std::string& name, const TensorInfo& info) {
  if (info.shape.size() != 2 || !dtype_is_float(info.dtype) || info.dtype == DType::F8_E4M3)
    return false;
  auto ends = [&](const std::string& s) {
    return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends("_proj.weight") || ends(".w1.weight") || ends(".w2.weight") || ends(".w3.weight");
}
}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 3) {
      std::fprintf(stderr, "usage: fp4kit-fp8-cast SRC OUT [--shard-gb N]\n");
      return 2;
    }
    const fs::path src = argv[1], out = argv[2];
    uint64_t shard = 5ull << 30;
    if (argc == 5 && std::string(argv[3]) == "--shard-gb") shard = std::stoull(argv[4]) << 30;
    auto ckpt = Checkpoint::open(src);
    std::vector<TensorSpec> specs;
    for (const auto& name : ckpt->tensor_names()) {
      const TensorInfo& info = ckpt->info(name);
      if (!cast_it(name, info)) {
        specs.push_back({name, info.dtype, info.shape});
        continue;
      }
      specs.push_back({name, DType::F8_E4M3, info.shape});
      specs.push_back({name + "_scale_inv", DType::F32,
                       {(info.shape[0] + 127) / 128, (info.shape[1] + 127) / 128}});
    }
    fs::create_directories(out);
    CheckpointWriter w(out, specs, shard);
    std::vector<float> f;
    for (const auto& name : ckpt->tensor_names()) {
      const TensorInfo& info = ckpt->info(name);
      const auto bytes = ckpt->bytes(name);
      if (!cast_it(name, info)) {
        w.write(name, bytes);
        ckpt->release(name);
        continue;
      }
      const uint64_t n = info.shape[0], k = info.shape[1], gr = (n + 127) / 128, gc = (k + 127) / 128;
      f.resize(n * k);
      decode_to_f32(bytes.data(), info.dtype, n * k, f.data());
      std::vector<uint8_t> codes(n * k);
      std::vector<float> scale(gr * gc);
      parallel_for(0, gr, 1, [&](size_t b0, size_t b1) {
        for (size_t br = b0; br < b1; ++br)
          for (uint64_t bc = 0; bc < gc; ++bc) {
            const uint64_t r1 = std::min(n, br * 128 + 128), c1 = std::min(k, bc * 128 + 128);
            float amax = 0;
            for (uint64_t r = br * 128; r < r1; ++r)
              for (uint64_t c = bc * 128; c < c1; ++c) amax = std::max(amax, std::fabs(f[r * k + c]));
            const float s = amax > 0 ? amax / 448.0f : 1.0f;
            scale[br * gc + bc] = s;
            for (uint64_t r = br * 128; r < r1; ++r)
              for (uint64_t c = bc * 128; c < c1; ++c) codes[r * k + c] = float_to_e4m3(f[r * k + c] / s);
          }
      });
      w.write(name, codes);
      std::vector<uint8_t> sb(scale.size() * 4);
      std::memcpy(sb.data(), scale.data(), sb.size());
      w.write(name + "_scale_inv", sb);
      ckpt->release(name);
    }
    w.finish();
    nlohmann::json cfg = ckpt->config();
    cfg["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"},
                                  {"activation_scheme", "dynamic"},
                                  {"weight_block_size", {128, 128}}};
    std::ofstream(out / "config.json") << cfg.dump(2) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
