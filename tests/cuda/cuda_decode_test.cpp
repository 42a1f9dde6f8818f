// Quantized checkpoint weights decoded on the GPU (decode_kernels.cu through the CUDA backend's
// load_linear / load_bmm_expert) against the host decoding (weights.hpp load_linear /
// load_bmm_expert), bit for bit: decoding is exact table lookups and one or two float32 roundings,
// so every float must be identical. Every non-NaN E4M3 code (subnormals, +-0, 448) as FP8 values
// and as NVFP4 block scales, F32 and BF16 FP8 grids with partial blocks at both edges and tiny /
// huge block scales (subnormal products), every non-NaN E8M0 scale (2^-127 .. 2^127), all 16 E2M1
// codes, odd shapes; each load once staged and once through the prefetcher. NaN codes (FP8
// 0x7F/0xFF) and the E8M0 NaN scale 0xFF are errors on both, naming the place.
#include <cstring>
#include <functional>

#include "cuda/gpu_support.hpp"
#include "fp4kit/engine/backend.hpp"
#include "fp4kit/engine/cuda/cuda_backend.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit::engine {
namespace {

struct Tensors {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<uint8_t>> data;
  void add(const std::string& name, DType dt, std::vector<uint64_t> shape, std::vector<uint8_t> b) {
    specs.push_back({name, dt, std::move(shape)});
    data.push_back(std::move(b));
  }
  void add_f32(const std::string& name, std::vector<uint64_t> shape, const std::vector<float>& v) {
    std::vector<uint8_t> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    add(name, DType::F32, std::move(shape), std::move(b));
  }
  std::unique_ptr<Checkpoint> write(const std::filesystem::path& dir) {
    {
      CheckpointWriter w(dir, specs);
      for (size_t i = 0; i < specs.size(); ++i) w.write(specs[i].name, data[i]);
      w.finish();
    }
    return Checkpoint::open(dir);
  }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& s : specs) n.push_back(s.name);
    return n;
  }
};

std::vector<uint8_t> bytes_of(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Every E4M3 code but the two NaNs, cycled (0x7F / 0xFF become 0x00 / 0x80).
std::vector<uint8_t> e4m3_codes(size_t n, size_t shift) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = static_cast<uint8_t>((i + shift) % 256);
    b[i] = (c & 0x7F) == 0x7F ? static_cast<uint8_t>(c & 0x80) : c;
  }
  return b;
}

uint16_t bf16_bits(float x) {  // exact for the values used (bf16-representable)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>(u >> 16);
}

struct Fixture {
  std::unique_ptr<Backend> gpu = cuda::make_cuda_backend(cuda::BackendOptions{});
  std::vector<float> get(const Linear& L) {
    std::vector<float> h(L.n * L.k);
    gpu->download(L.w.f(), h.size(), h.data());
    return h;
  }
  std::vector<float> get_bias(const Linear& L) {
    std::vector<float> h(L.bias.floats());
    if (!h.empty()) gpu->download(L.bias.f(), h.size(), h.data());
    return h;
  }
  // Bit equality of the device decoding with the host one, staged and prefetched.
  void expect_same(const Checkpoint& c, const std::vector<std::string>& names, const LinearRef& ref,
                   bool act, const std::string& label) {
    const LinearWeights host = load_linear(c, ref, act);
    for (bool prefetch : {false, true}) {
      if (prefetch) gpu->prefetch(c, names);
      const Linear L = gpu->load_linear(c, ref, act);
      const auto w = get(L);
      ASSERT_EQ(w.size(), host.w.size()) << label;
      EXPECT_EQ(std::memcmp(w.data(), host.w.data(), w.size() * 4), 0)
          << label << (prefetch ? " (prefetched)" : " (staged)") << ": " << first_diff(w, host.w);
      EXPECT_EQ(L.act_global_scale, host.act_global_scale) << label;
      EXPECT_EQ(get_bias(L), host.bias) << label;
    }
  }
  void expect_same_bmm(const Checkpoint& c, const std::vector<std::string>& names, const BmmRef& ref,
                       size_t e, const std::string& label) {
    const LinearWeights host = load_bmm_expert(c, ref, e, true);
    for (bool prefetch : {false, true}) {
      if (prefetch) gpu->prefetch(c, names);
      const Linear L = gpu->load_bmm_expert(c, ref, e, true);
      const auto w = get(L);
      ASSERT_EQ(w.size(), host.w.size()) << label;
      EXPECT_EQ(std::memcmp(w.data(), host.w.data(), w.size() * 4), 0)
          << label << " expert " << e << (prefetch ? " (prefetched)" : " (staged)") << ": "
          << first_diff(w, host.w);
      EXPECT_EQ(L.act_global_scale, host.act_global_scale) << label;
      EXPECT_EQ(get_bias(L), host.bias) << label;
    }
  }
  static std::string first_diff(const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (std::memcmp(&a[i], &b[i], 4) != 0)
        return "first difference at " + std::to_string(i) + ": " + std::to_string(a[i]) +
               " vs " + std::to_string(b[i]);
    return "none";
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CudaDecode, Fp8BlockScaledIsBitExact) {
  FP4KIT_REQUIRE_GPU();
  testing::TempDir tmp;
  Tensors T;
  // F32 grid [2, 2] of a [130, 200] weight: partial blocks at the bottom and right edges; tiny and
  // huge scales (products below FLT_MIN and near 1e32).
  const std::string a = "model.layers.0.self_attn.o_proj", b = "model.layers.0.mlp.down_proj";
  T.add(a + ".weight", DType::F8_E4M3, {130, 200}, e4m3_codes(130 * 200, 0));
  T.add_f32(a + ".weight_scale_inv", {2, 2}, {0.75f, 1e-30f, 3.5e29f, 2.0f / 3.0f});
  // BF16 grid [3, 2] of a [257, 129] weight.
  T.add(b + ".weight", DType::F8_E4M3, {257, 129}, e4m3_codes(257 * 129, 77));
  std::vector<uint8_t> g(12);
  const float gv[6] = {0.5f, 1.5f, 0.0078125f, 3.0f, 96.0f, 1.1754944e-38f};
  for (int i = 0; i < 6; ++i) {
    const uint16_t h = bf16_bits(gv[i]);
    std::memcpy(g.data() + 2 * i, &h, 2);
  }
  T.add(b + ".weight_scale_inv", DType::BF16, {3, 2}, g);
  T.add(b + ".bias", DType::F32, {257}, std::vector<uint8_t>(257 * 4, 0x3F));
  auto c = T.write(tmp.path());
  Fixture F;  // after the checkpoint: the backend's prefetch thread stops before the file unmaps
  F.expect_same(*c, T.names(), {a, "", 0, 130, 200}, false, "FP8 F32 grid");
  F.expect_same(*c, T.names(), {b, "", 0, 257, 129}, false, "FP8 BF16 grid");

  testing::TempDir bad_dir;
  Tensors B;
  auto codes = e4m3_codes(130 * 200, 0);
  codes[5 * 200 + 77] = 0xFF;  // -NaN
  codes[9 * 200 + 3] = 0x7F;
  B.add(a + ".weight", DType::F8_E4M3, {130, 200}, codes);
  B.add_f32(a + ".weight_scale_inv", {2, 2}, {1.0f, 1.0f, 1.0f, 1.0f});
  auto cb = B.write(bad_dir.path());
  const LinearRef ref{a, "", 0, 130, 200};
  const std::string host_err = error_of([&] { load_linear(*cb, ref, false); });
  const std::string gpu_err = error_of([&] { F.gpu->load_linear(*cb, ref, false); });
  EXPECT_NE(host_err.find("NaN code"), std::string::npos) << host_err;
  EXPECT_NE(gpu_err.find("NaN code 255 at row 5, column 77"), std::string::npos) << gpu_err;
}

TEST(CudaDecode, Nvfp4BothFormatsAreBitExact) {
  FP4KIT_REQUIRE_GPU();
  testing::TempDir tmp;
  Tensors T;
  const size_t n = 87, k = 48;  // every E4M3 scale code but NaN across the 87 x 3 blocks
  const std::string a = "model.layers.0.self_attn.q_proj", b = "model.layers.0.self_attn.k_proj";
  T.add(a + ".weight", DType::U8, {n, k / 2}, bytes_of(n * k / 2, 1));
  T.add(a + ".weight_scale", DType::F8_E4M3, {n, k / 16}, e4m3_codes(n * k / 16, 0));
  T.add_f32(a + ".weight_scale_2", {1}, {0.0123f});
  T.add_f32(a + ".input_scale", {1}, {0.37f});
  T.add(b + ".weight_packed", DType::U8, {n, k / 2}, bytes_of(n * k / 2, 2));
  T.add(b + ".weight_scale", DType::F8_E4M3, {n, k / 16}, e4m3_codes(n * k / 16, 100));
  T.add_f32(b + ".weight_global_scale", {1}, {81.3f});
  T.add_f32(b + ".input_global_scale", {1}, {3.1f});
  auto c = T.write(tmp.path());
  Fixture F;
  F.expect_same(*c, T.names(), {a, "", 0, n, k}, true, "NVFP4 ModelOpt");
  F.expect_same(*c, T.names(), {b, "", 0, n, k}, true, "NVFP4 compressed-tensors");
}

TEST(CudaDecode, BmmExpertsMxfp4Nvfp4AndFloatAreBitExact) {
  FP4KIT_REQUIRE_GPU();
  testing::TempDir tmp;
  Tensors T;
  const size_t E = 3, n = 18, k = 160;  // MXFP4: 5 blocks per row; NVFP4: 10 blocks per row
  const std::string mx = "model.layers.0.mlp.experts.gate_up_proj";
  const std::string nv = "model.layers.1.mlp.experts.gate_up_proj";
  const std::string fl = "model.layers.2.mlp.experts.down_proj";
  T.add_f32(mx + "_bias", {E, n}, testing::random_floats(E * n, 3));
  T.add(mx + "_blocks", DType::U8, {E, n, k / 32, 16}, bytes_of(E * n * k / 2, 4));
  std::vector<uint8_t> sc(E * n * k / 32);
  for (size_t i = 0; i < sc.size(); ++i) sc[i] = static_cast<uint8_t>(i % 255);  // 0 .. 254
  T.add(mx + "_scales", DType::U8, {E, n, k / 32}, sc);
  T.add(nv, DType::U8, {E, k / 2, n}, bytes_of(E * n * k / 2, 5));
  T.add(nv + "_input_scale", DType::F32, {1}, std::vector<uint8_t>{0, 0, 0x80, 0x3E});  // 0.25
  T.add(nv + "_weight_scale", DType::F8_E4M3, {E, k / 16, n}, e4m3_codes(E * n * k / 16, 5));
  T.add_f32(nv + "_weight_scale_2", {1}, {0.0071f});
  std::vector<uint8_t> fb = bytes_of(E * k * n * 2, 6);
  for (size_t i = 1; i < fb.size(); i += 2) fb[i] &= 0x3F;  // finite bf16
  T.add(fl, DType::BF16, {E, k, n}, fb);
  auto c = T.write(tmp.path());
  Fixture F;
  for (size_t e = 0; e < E; ++e) {
    F.expect_same_bmm(*c, T.names(), {mx, BmmRef::Storage::Mxfp4, n, k}, e, "MXFP4");
    F.expect_same_bmm(*c, T.names(), {nv, BmmRef::Storage::Nvfp4, n, k}, e, "NVFP4 BMM");
    F.expect_same_bmm(*c, T.names(), {fl, BmmRef::Storage::Float, n, k}, e, "BF16 BMM");
  }

  testing::TempDir bad_dir;
  Tensors B;
  B.add(mx + "_blocks", DType::U8, {E, n, k / 32, 16}, bytes_of(E * n * k / 2, 4));
  sc[2 * n * k / 32 + 7] = 0xFF;  // expert 2, its block 7
  B.add(mx + "_scales", DType::U8, {E, n, k / 32}, sc);
  auto cb = B.write(bad_dir.path());
  const BmmRef ref{mx, BmmRef::Storage::Mxfp4, n, k};
  EXPECT_EQ(error_of([&] { F.gpu->load_bmm_expert(*cb, ref, 1, false); }), "");
  const std::string host_err = error_of([&] { load_bmm_expert(*cb, ref, 2, false); });
  const std::string gpu_err = error_of([&] { F.gpu->load_bmm_expert(*cb, ref, 2, false); });
  EXPECT_NE(host_err.find("block 7 has the NaN scale"), std::string::npos) << host_err;
  EXPECT_EQ(gpu_err, host_err);
}

}  // namespace
}  // namespace fp4kit::engine
