// Each GPU kernel against the CPU engine's op (cpu/ops.hpp, act_quant.hpp, rope.hpp,
// StatsCollector) on fresh random inputs, outputs poisoned with NaN first.
#include <algorithm>
#include <map>
#include <numeric>

#include "cuda/gpu_support.hpp"
#include "fp4kit/engine/act_quant.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/cuda/kernels.hpp"
#include "fp4kit/engine/rope.hpp"

namespace fp4kit::engine::cuda {
namespace {

using testing::Dev;
using testing::random_floats;
using testing::rel_l2;

TEST(CudaOps, GemmMatchesCpuInFp32AndTf32) {
  FP4KIT_REQUIRE_GPU();
  const size_t rows = 301, k = 384, n = 257;
  const auto x = random_floats(rows * k, 1), w = random_floats(n * k, 2), b = random_floats(n, 3);
  std::vector<float> ref(rows * n);
  matmul_nt(x.data(), rows, k, w.data(), n, ref.data(), b.data());
  // [k, n] storage of the same matrix (BMM experts)
  std::vector<float> wkn(k * n);
  for (size_t r = 0; r < n; ++r)
    for (size_t c = 0; c < k; ++c) wkn[c * n + r] = w[r * k + c];
  for (Math m : {Math::Fp32, Math::Tf32}) {
    Context ctx(0, m);
    Dev dx(x), dw(w), dwkn(wkn), db(b);
    for (bool kn : {false, true}) {
      Dev dy(rows * n);
      ctx.gemm_nt(dx.p(), rows, k, kn ? dwkn.p() : dw.p(), n, dy.p(), kn);
      add_bias(dy.p(), rows, n, db.p(), ctx.compute());
      ctx.sync();
      const double err = rel_l2(dy.get(), ref);
      // float32: rounding of a 384-term sum; TF32: 10-bit mantissa inputs (~3e-4 typical)
      EXPECT_LT(err, m == Math::Fp32 ? 1e-6 : 2e-3) << (kn ? "kn" : "nk");
      if (m == Math::Tf32) EXPECT_GT(err, 1e-6) << "TF32 products should differ from float32";
    }
  }
}

TEST(CudaOps, RmsNormMatchesCpu) {
  FP4KIT_REQUIRE_GPU();
  const size_t rows = 77, dim = 2048;
  const auto x = random_floats(rows * dim, 4, 3.0f), w = random_floats(dim, 5);
  std::vector<float> ref(rows * dim);
  engine::rms_norm(x.data(), rows, dim, w.data(), 1e-6f, ref.data());
  Dev dx(x), dw(w), dy(rows * dim);
  rms_norm(dx.p(), rows, dim, dw.p(), 0.0f, 1e-6f, dy.p(), nullptr);
  EXPECT_LT(rel_l2(dy.get(), ref), 1e-6);
  // 1 + w form equals the plain form with weight 1 + w
  std::vector<float> w1(dim);
  for (size_t i = 0; i < dim; ++i) w1[i] = 1.0f + w[i];
  engine::rms_norm(x.data(), rows, dim, w1.data(), 1e-6f, ref.data());
  Dev dy1(rows * dim);
  rms_norm(dx.p(), rows, dim, dw.p(), 1.0f, 1e-6f, dy1.p(), nullptr);
  EXPECT_LT(rel_l2(dy1.get(), ref), 1e-6);
}

TEST(CudaOps, ActivationsMatchCpu) {
  FP4KIT_REQUIRE_GPU();
  const size_t rows = 33, inter = 200;
  const auto gu = random_floats(rows * 2 * inter, 6, 4.0f);
  {
    std::vector<float> g(gu.begin(), gu.begin() + rows * inter), u(gu.begin() + rows * inter, gu.end());
    Dev dg(g), du(u);
    engine::silu_mul(g.data(), u.data(), g.size());
    silu_mul(dg.p(), du.p(), g.size(), nullptr);
    EXPECT_LT(rel_l2(dg.get(), g), 1e-6);
  }
  std::vector<float> ref(rows * inter);
  Dev dgu(gu);
  engine::silu_glu_split(gu.data(), rows, inter, ref.data());
  Dev o1(rows * inter);
  silu_glu_split(dgu.p(), rows, inter, o1.p(), nullptr);
  EXPECT_LT(rel_l2(o1.get(), ref), 1e-6);
  engine::clamped_swiglu_interleaved(gu.data(), rows, inter, 1.702f, 7.0f, ref.data());
  Dev o2(rows * inter);
  clamped_swiglu_interleaved(dgu.p(), rows, inter, 1.702f, 7.0f, o2.p(), nullptr);
  EXPECT_LT(rel_l2(o2.get(), ref), 1e-6);
}

TEST(CudaOps, RopeBothFormsMatchCpu) {
  FP4KIT_REQUIRE_GPU();
  RopeParams rp;
  rp.theta = 1e6;
  rp.rotary_dim = 128;
  const Rope cpu_rope(rp);
  const int heads = 4, hd = 128, half = hd / 2;
  const size_t rows = 300, stride = heads * hd + 64;  // padded rows: the padding stays untouched
  const auto x = random_floats(rows * stride, 7);
  std::vector<int32_t> pos(rows);
  for (size_t r = 0; r < rows; ++r) pos[r] = static_cast<int32_t>((r * 37) % 280);
  std::vector<float> cs(280 * half), sn(280 * half);
  for (size_t p = 0; p < 280; ++p) {
    std::vector<float> one(hd, 0.0f);
    std::fill(one.begin(), one.begin() + half, 1.0f);
    cpu_rope.apply(one.data(), 1, hd, p);
    std::copy(one.begin(), one.begin() + half, cs.begin() + p * half);
    std::copy(one.begin() + half, one.end(), sn.begin() + p * half);
  }
  DeviceArray<int32_t> dpos(rows);
  upload(dpos.data(), pos.data(), rows * 4, nullptr);
  Dev dcs(cs), dsn(sn);
  // rotate_half form
  {
    auto ref = x;
    for (size_t r = 0; r < rows; ++r) cpu_rope.apply(ref.data() + r * stride, heads, hd, pos[r]);
    Dev dx(x);
    rope(dx.p(), rows, stride, heads, hd, half, dpos.data(), dcs.p(), dsn.p(), false, nullptr);
    EXPECT_LT(rel_l2(dx.get(), ref), 1e-6);
  }
  // interleaved (Llama-4): the table of that form comes from apply_interleaved of (1, 0) pairs
  for (size_t p = 0; p < 280; ++p) {
    std::vector<float> one(hd, 0.0f);
    for (int i = 0; i < half; ++i) one[2 * i] = 1.0f;
    cpu_rope.apply_interleaved(one.data(), 1, hd, p);
    for (int i = 0; i < half; ++i) cs[p * half + i] = one[2 * i], sn[p * half + i] = one[2 * i + 1];
  }
  Dev dcs2(cs), dsn2(sn);
  auto ref = x;
  for (size_t r = 0; r < rows; ++r) cpu_rope.apply_interleaved(ref.data() + r * stride, heads, hd, pos[r]);
  Dev dx(x);
  rope(dx.p(), rows, stride, heads, hd, half, dpos.data(), dcs2.p(), dsn2.p(), true, nullptr);
  EXPECT_LT(rel_l2(dx.get(), ref), 1e-6);
}

struct AttCase {
  int nh, nkv, d, window, chunk;
  bool sinks;
};

TEST(CudaOps, AttentionMatchesCpuWithEveryOption) {
  FP4KIT_REQUIRE_GPU();
  const std::vector<size_t> lens{1, 97, 256, 33};
  std::vector<int64_t> off{0};
  for (size_t l : lens) off.push_back(off.back() + static_cast<int64_t>(l));
  const size_t T = static_cast<size_t>(off.back());
  DeviceArray<int64_t> doff(off.size());
  upload(doff.data(), off.data(), off.size() * 8, nullptr);
  for (const AttCase& c : {AttCase{8, 2, 128, 0, 0, false}, AttCase{4, 4, 64, 16, 0, true},
                           AttCase{6, 3, 8, 0, 64, false}, AttCase{2, 1, 256, 0, 0, true},
                           AttCase{4, 2, 48, 40, 0, false}}) {
    const size_t qdim = size_t(c.nh) * c.d, kvdim = size_t(c.nkv) * c.d;
    const auto q = random_floats(T * qdim, 10 + c.d, 2.0f), k = random_floats(T * kvdim, 11 + c.d, 2.0f),
               v = random_floats(T * kvdim, 12 + c.d);
    const auto sinks = random_floats(c.nh, 13);
    const float scale = 1.0f / std::sqrt(float(c.d));
    std::vector<float> ref(T * qdim);
    for (size_t s = 0; s < lens.size(); ++s)
      engine::causal_attention(q.data() + off[s] * qdim, qdim, k.data() + off[s] * kvdim,
                       v.data() + off[s] * kvdim, kvdim, lens[s], c.nh, c.nkv, c.d, scale,
                       c.window, ref.data() + off[s] * qdim, qdim,
                       c.sinks ? sinks.data() : nullptr, c.chunk);
    Dev dq(q), dk(k), dv(v), ds(sinks), dout(T * qdim);
    causal_attention(dq.p(), qdim, dk.p(), dv.p(), kvdim, doff.data(), int(lens.size()), 256, c.nh,
                     c.nkv, c.d, scale, c.window, c.chunk, c.sinks ? ds.p() : nullptr, dout.p(),
                     qdim, nullptr);
    EXPECT_LT(rel_l2(dout.get(), ref), 1e-5) << "heads " << c.nh << "/" << c.nkv << " d " << c.d
                                             << " window " << c.window << " chunk " << c.chunk;
  }
}

TEST(CudaOps, Nvfp4ActivationFakeQuantIsBitExact) {
  FP4KIT_REQUIRE_GPU();
  const size_t rows = 257, k = 512;
  auto x = random_floats(rows * k, 40, 3.0f);
  for (size_t i = 0; i < 64; ++i) x[i * 97] = 0.0f;           // zero blocks and values
  for (size_t i = 0; i < 16; ++i) x[k + i] = 0.25f * float(i);  // e2m1 ties
  auto ref = x;
  nvfp4_fake_quant_activations(ref.data(), rows, k, 448.0f * 6.0f / 9.0f);
  Dev dx(x);
  nvfp4_fake_quant(dx.p(), rows, k, 448.0f * 6.0f / 9.0f, nullptr);
  const auto got = dx.get();
  size_t diff = 0;
  for (size_t i = 0; i < got.size(); ++i) diff += std::memcmp(&got[i], &ref[i], 4) != 0;
  EXPECT_EQ(diff, 0u);
}

TEST(CudaOps, WidenBf16AndF16Exactly) {
  FP4KIT_REQUIRE_GPU();
  std::vector<uint16_t> bf(65536);
  std::iota(bf.begin(), bf.end(), 0);
  DeviceArray<uint16_t> d(bf.size());
  upload(d.data(), bf.data(), bf.size() * 2, nullptr);
  Dev out(bf.size());
  to_f32(d.data(), SrcType::BF16, bf.size(), out.p(), nullptr);
  const auto got = out.get();
  for (size_t i = 0; i < bf.size(); ++i) {
    const uint32_t want = uint32_t(bf[i]) << 16;
    uint32_t have;
    std::memcpy(&have, &got[i], 4);
    const bool nan = std::isnan(got[i]);
    if (!nan) ASSERT_EQ(have, want) << i;
  }
}

}  // namespace
}  // namespace fp4kit::engine::cuda
