// The CUDA backend op by op against the CPU backend (backend.hpp: the same call on both, fresh
// random inputs, outputs poisoned first), then whole models through the same blocks and families.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <string>

#include "cuda/gpu_support.hpp"
#include "fp4kit/engine/backend.hpp"
#include "fp4kit/engine/column_stats_slots.hpp"
#include "fp4kit/engine/stats_collector.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/engine/cuda/cuda_backend.hpp"
#include "fp4kit/engine/rope.hpp"

namespace fp4kit::engine {
namespace {

using testing::random_floats;
using testing::rel_l2;

struct Pair {
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  std::unique_ptr<Backend> gpu;
  explicit Pair(bool tf32 = false) {
    cuda::BackendOptions o;
    o.tf32 = tf32;
    gpu = cuda::make_cuda_backend(o);
  }
  // The same host data in both backends.
  std::pair<Buffer, Buffer> put(const std::vector<float>& v) {
    return {cpu->upload(std::vector<float>(v)), gpu->upload(std::vector<float>(v))};
  }
  std::pair<Buffer, Buffer> poisoned(size_t n) { return put(std::vector<float>(n, NAN)); }
  std::vector<float> get(Backend& b, const Buffer& x, size_t n) {
    std::vector<float> h(n);
    b.download(x.f(), n, h.data());
    return h;
  }
  double diff(const std::pair<Buffer, Buffer>& x, size_t n) {
    return rel_l2(get(*gpu, x.second, n), get(*cpu, x.first, n));
  }
};

TEST(CudaBackend, ElementwiseNormsAndProducts) {
  FP4KIT_REQUIRE_GPU();
  Pair P;
  const size_t rows = 97, k = 320, n = 130;
  auto x = P.put(random_floats(rows * k, 1, 2.0f));
  auto w = P.put(random_floats(n * k, 2));
  auto b = P.put(random_floats(n, 3));
  auto y = P.poisoned(rows * n);
  P.cpu->gemm(x.first.f(), rows, k, w.first.f(), n, y.first.f(), b.first.f());
  P.gpu->gemm(x.second.f(), rows, k, w.second.f(), n, y.second.f(), b.second.f());
  EXPECT_LT(P.diff(y, rows * n), 1e-6) << "gemm (float32 products)";

  auto g = P.put(random_floats(k, 4));
  for (bool one_plus : {false, true})
    for (bool weighted : {false, true}) {
      auto o = P.poisoned(rows * k);
      P.cpu->rms_norm(x.first.f(), rows, k, weighted ? g.first.f() : nullptr, 1e-5f, o.first.f(), one_plus);
      P.gpu->rms_norm(x.second.f(), rows, k, weighted ? g.second.f() : nullptr, 1e-5f, o.second.f(), one_plus);
      EXPECT_LT(P.diff(o, rows * k), 1e-6) << "rms_norm one_plus " << one_plus << " weighted " << weighted;
    }

  auto a = P.put(random_floats(rows * k, 5, 3.0f));
  auto s = P.put(random_floats(rows, 6));
  P.cpu->add_rows_scaled(a.first.f(), x.first.f(), rows, k, s.first.f());
  P.gpu->add_rows_scaled(a.second.f(), x.second.f(), rows, k, s.second.f());
  P.cpu->add(a.first.f(), x.first.f(), rows * k);
  P.gpu->add(a.second.f(), x.second.f(), rows * k);
  P.cpu->scale(a.first.f(), rows * k, 0.37f);
  P.gpu->scale(a.second.f(), rows * k, 0.37f);
  EXPECT_LT(P.diff(a, rows * k), 1e-6) << "add_rows_scaled, add, scale";
  P.cpu->softmax(a.first.f(), rows, k);
  P.gpu->softmax(a.second.f(), rows, k);
  EXPECT_LT(P.diff(a, rows * k), 1e-6) << "softmax";
  P.cpu->sigmoid(a.first.f(), rows * k);
  P.gpu->sigmoid(a.second.f(), rows * k);
  EXPECT_LT(P.diff(a, rows * k), 1e-6) << "sigmoid";

  auto gu = P.put(random_floats(rows * 2 * k, 7, 4.0f));
  auto o1 = P.poisoned(rows * k), o2 = P.poisoned(rows * k);
  P.cpu->silu_glu_split(gu.first.f(), rows, k, o1.first.f());
  P.gpu->silu_glu_split(gu.second.f(), rows, k, o1.second.f());
  P.cpu->clamped_swiglu_interleaved(gu.first.f(), rows, k, 1.702f, 7.0f, o2.first.f());
  P.gpu->clamped_swiglu_interleaved(gu.second.f(), rows, k, 1.702f, 7.0f, o2.second.f());
  EXPECT_LT(P.diff(o1, rows * k), 1e-6);
  EXPECT_LT(P.diff(o2, rows * k), 1e-6);
  P.cpu->silu_mul(o1.first.f(), o2.first.f(), rows * k);
  P.gpu->silu_mul(o1.second.f(), o2.second.f(), rows * k);
  EXPECT_LT(P.diff(o1, rows * k), 1e-6);

  auto f = P.poisoned(rows * k);
  P.cpu->fill(f.first.f(), rows * k, 0.0f);
  P.gpu->fill(f.second.f(), rows * k, 0.0f);
  P.cpu->copy_strided(x.first.f() + 3, k, rows, 50, f.first.f() + 7, k);
  P.gpu->copy_strided(x.second.f() + 3, k, rows, 50, f.second.f() + 7, k);
  P.cpu->copy(x.first.f(), 100, f.first.f() + 1000);
  P.gpu->copy(x.second.f(), 100, f.second.f() + 1000);
  EXPECT_EQ(P.diff(f, rows * k), 0.0) << "fill, copy_strided, copy";

  auto q = P.put(random_floats(rows * 64, 8, 3.0f));
  P.cpu->fake_quant_activations(q.first.f(), rows, 64, 300.0f);
  P.gpu->fake_quant_activations(q.second.f(), rows, 64, 300.0f);
  EXPECT_EQ(P.diff(q, rows * 64), 0.0) << "NVFP4 activations bit for bit";
}

TEST(CudaBackend, RopeTemperatureAndAttention) {
  FP4KIT_REQUIRE_GPU();
  Pair P;
  RopeParams rp;
  rp.theta = 5e5;
  rp.rotary_dim = 64;
  const Rope rope(rp);
  const size_t len = 200;
  const int nh = 8, nkv = 2, d = 64;
  const size_t qs = nh * d + 16, kvs = nkv * d;
  RopeParams partial = rp;
  partial.rotary_dim = 16;  // Qwen3.5 / Qwen3-Next: only the leading dims of a head rotate
  const Rope rope_partial(partial);
  for (const Rope* r : {&rope, &rope_partial})
    for (RopeStyle st : {RopeStyle::Half, RopeStyle::Interleaved}) {
      auto x = P.put(random_floats(len * qs, 9));
      P.cpu->rope(x.first.f(), len, qs, nh, d, *r, st);
      P.gpu->rope(x.second.f(), len, qs, nh, d, *r, st);
      EXPECT_LT(P.diff(x, len * qs), 1e-6) << "rotary_dim " << 2 * r->inv_freq().size();
    }
  auto t = P.put(random_floats(len * qs, 10));
  P.cpu->attention_temperature(t.first.f(), len, qs, nh * d, 8.0f, 0.1f);
  P.gpu->attention_temperature(t.second.f(), len, qs, nh * d, 8.0f, 0.1f);
  EXPECT_EQ(P.diff(t, len * qs), 0.0);

  // 200 keys: one block of queries; 600 and 1100: the causal blocks of queries (2 and 4, uneven).
  for (const size_t L : {len, size_t(600), size_t(1100)}) {
    auto q = P.put(random_floats(L * qs, 11, 2.0f));
    auto k = P.put(random_floats(L * kvs, 12, 2.0f));
    auto v = P.put(random_floats(L * 2 * kvs, 13));
    auto sinks = P.put(random_floats(nh, 14));
    for (int variant = 0; variant < 4; ++variant) {
      AttentionOptions oc, og;
      oc.scale = og.scale = 0.125f;
      if (variant == 1) oc.window = og.window = 37;
      if (variant == 2) oc.chunk = og.chunk = 64, oc.sinks = sinks.first.f(), og.sinks = sinks.second.f();
      if (variant == 3) oc.v_dim = og.v_dim = 32, oc.v_stride = og.v_stride = 2 * kvs;  // MLA-like
      const size_t os = nh * d;
      auto o = P.poisoned(L * os);
      P.cpu->attention(q.first.f(), qs, k.first.f(), v.first.f(), kvs, L, nh, nkv, d, oc,
                       o.first.f(), os);
      P.gpu->attention(q.second.f(), qs, k.second.f(), v.second.f(), kvs, L, nh, nkv, d, og,
                       o.second.f(), os);
      std::vector<float> a = P.get(*P.gpu, o.second, L * os), b = P.get(*P.cpu, o.first, L * os);
      if (variant == 3)  // v_dim: the first nh*32 of each row
        for (size_t r = 0; r < L; ++r)
          for (size_t c = nh * 32; c < os; ++c) a[r * os + c] = b[r * os + c] = 0.0f;
      EXPECT_LT(rel_l2(a, b), 1e-5) << "attention variant " << variant << ", " << L << " keys";
    }
  }
}

// Logits with many exact ties (a handful of distinct values, equal softmax/sigmoid scores and
// equal group scores), so the order among equal scores decides the choice.
std::vector<float> tie_heavy_logits(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(-3, 3);
  std::vector<float> v(n);
  for (float& x : v) x = 0.5f * static_cast<float>(d(g));
  return v;
}

// The GPU routing kernel against the CPU engine's route_topk: the same experts and the same
// weights bit for bit, for every router kind, on random and on tie-heavy logits; and the grouped
// form (route_grouped) equal to the CPU backend's (rows in token order per expert, same offsets).
TEST(CudaBackend, RoutingEqualsCpuRouteTopk) {
  FP4KIT_REQUIRE_GPU();
  Pair P;
  struct Shape {
    size_t T, E, k, groups, topk_group;
  };
  for (const Shape sh : {Shape{500, 64, 6, 8, 3}, Shape{3000, 128, 8, 8, 4}, Shape{257, 256, 8, 8, 4},
                         Shape{1100, 32, 1, 4, 1}, Shape{64, 384, 8, 1, 1}}) {
    auto bias = P.put(random_floats(sh.E, 16, 0.1f));
    for (int ties = 0; ties < 2; ++ties) {
      const std::vector<float> host =
          ties ? tie_heavy_logits(sh.T * sh.E, 20 + unsigned(sh.E)) : random_floats(sh.T * sh.E, 15, 2.0f);
      auto lg = P.put(host);
      for (RouterKind kind : {RouterKind::SoftmaxTopk, RouterKind::TopkSoftmax,
                              RouterKind::TopkSigmoid, RouterKind::SigmoidGroupTopk,
                              RouterKind::SoftmaxGroupTopk}) {
        for (int variant = 0; variant < 2; ++variant) {
          RouterOptions oc;
          oc.kind = kind;
          oc.top_k = sh.k;
          oc.norm_topk = variant == 0;
          oc.n_group = sh.groups;
          oc.topk_group = sh.topk_group;
          oc.scaling = variant == 0 ? 2.5f : 1.0f;
          RouterOptions og = oc;
          if (kind == RouterKind::SigmoidGroupTopk && variant == 0)
            oc.selection_bias = bias.first.f(), og.selection_bias = bias.second.f();
          const std::string label = "E " + std::to_string(sh.E) + " k " + std::to_string(sh.k) +
                                    " kind " + std::to_string(int(kind)) + " variant " +
                                    std::to_string(variant) + (ties ? " tie-heavy" : " random");
          const Routes rc = P.cpu->route(lg.first.f(), sh.T, sh.E, oc);
          const Routes rg = P.gpu->route(lg.second.f(), sh.T, sh.E, og);
          EXPECT_EQ(rc.expert, rg.expert) << label;
          EXPECT_EQ(rc.weight, rg.weight) << label;
          // A property, not only agreement: each token's k experts are distinct.
          for (size_t t = 0; t < sh.T; ++t) {
            std::vector<int32_t> e(rg.expert.begin() + t * sh.k, rg.expert.begin() + (t + 1) * sh.k);
            std::sort(e.begin(), e.end());
            ASSERT_TRUE(std::adjacent_find(e.begin(), e.end()) == e.end()) << label;
          }
          const ExpertGroups gc = P.cpu->route_grouped(lg.first.f(), sh.T, sh.E, oc);
          const ExpertGroups gg = P.gpu->route_grouped(lg.second.f(), sh.T, sh.E, og);
          EXPECT_EQ(gc.offset, gg.offset) << label;
          const size_t n = sh.T * sh.k;
          std::vector<float> rows_c(n), rows_g(n), w_c(n), w_g(n);
          P.cpu->download(reinterpret_cast<const float*>(gc.rows.as<uint32_t>()), n, rows_c.data());
          P.gpu->download(reinterpret_cast<const float*>(gg.rows.as<uint32_t>()), n, rows_g.data());
          P.cpu->download(gc.weight.f(), n, w_c.data());
          P.gpu->download(gg.weight.f(), n, w_g.data());
          EXPECT_EQ(0, std::memcmp(rows_c.data(), rows_g.data(), n * 4)) << label << ": rows";
          EXPECT_EQ(0, std::memcmp(w_c.data(), w_g.data(), n * 4)) << label << ": weights";
        }
      }
    }
  }
}

TEST(CudaBackend, RoutingGatherScatterAndStatistics) {
  FP4KIT_REQUIRE_GPU();
  Pair P;
  const size_t T = 500, E = 64, H = 96;
  auto lg = P.put(random_floats(T * E, 15, 2.0f));
  auto bias = P.put(random_floats(E, 16, 0.1f));
  for (RouterKind kind : {RouterKind::SoftmaxTopk, RouterKind::TopkSoftmax,
                          RouterKind::TopkSigmoid, RouterKind::SigmoidGroupTopk,
                          RouterKind::SoftmaxGroupTopk}) {
    RouterOptions oc;
    oc.kind = kind;
    oc.top_k = 6;
    oc.norm_topk = true;
    oc.n_group = 8;
    oc.topk_group = 3;
    oc.scaling = 2.5f;
    RouterOptions og = oc;
    if (kind == RouterKind::SigmoidGroupTopk) oc.selection_bias = bias.first.f(), og.selection_bias = bias.second.f();
    const Routes rc = P.cpu->route(lg.first.f(), T, E, oc), rg = P.gpu->route(lg.second.f(), T, E, og);
    EXPECT_EQ(rc.expert, rg.expert);
    EXPECT_EQ(rc.weight, rg.weight);
  }
  auto x = P.put(random_floats(T * H, 17));
  std::vector<uint32_t> rows(T / 2), src_rows(T / 2);
  std::iota(rows.begin(), rows.end(), 0u);
  std::shuffle(rows.begin(), rows.end(), std::mt19937(3));
  for (size_t i = 0; i < src_rows.size(); ++i) src_rows[i] = static_cast<uint32_t>((i * 7) % src_rows.size());
  const auto sc = random_floats(rows.size(), 18);
  // index and weight arrays in each backend's memory
  const Buffer rows_c = P.cpu->upload_u32(rows), rows_g = P.gpu->upload_u32(rows);
  const Buffer src_c = P.cpu->upload_u32(src_rows), src_g = P.gpu->upload_u32(src_rows);
  const auto scb = P.put(sc);
  auto gth = P.poisoned(rows.size() * H);
  P.cpu->gather_rows(x.first.f(), H, rows_c.as<uint32_t>(), rows.size(), scb.first.f(), gth.first.f());
  P.gpu->gather_rows(x.second.f(), H, rows_g.as<uint32_t>(), rows.size(), scb.second.f(), gth.second.f());
  EXPECT_EQ(P.diff(gth, rows.size() * H), 0.0);
  auto acc = P.put(random_floats(T * H, 19));
  P.cpu->scatter_add_rows(acc.first.f(), H, rows_c.as<uint32_t>(), rows.size(), gth.first.f(),
                          src_c.as<uint32_t>(), scb.first.f());
  P.gpu->scatter_add_rows(acc.second.f(), H, rows_g.as<uint32_t>(), rows.size(), gth.second.f(),
                          src_g.as<uint32_t>(), scb.second.f());
  P.cpu->scatter_add_rows(acc.first.f(), H, rows_c.as<uint32_t>(), rows.size(), gth.first.f(), nullptr, nullptr);
  P.gpu->scatter_add_rows(acc.second.f(), H, rows_g.as<uint32_t>(), rows.size(), gth.second.f(), nullptr, nullptr);
  EXPECT_LT(P.diff(acc, T * H), 1e-7);

  std::vector<float> cm(H), gm(H);
  std::vector<double> cs(H), gs(H);
  EXPECT_TRUE(P.cpu->column_stats(x.first.f(), T, H, cm.data(), cs.data()));
  EXPECT_TRUE(P.gpu->column_stats(x.second.f(), T, H, gm.data(), gs.data()));
  EXPECT_EQ(cm, gm);
  for (size_t c = 0; c < H; ++c) EXPECT_NEAR(gs[c], cs[c], 1e-12 * cs[c]);
  std::vector<double> gs2(H);
  EXPECT_TRUE(P.gpu->column_stats(x.second.f(), T, H, gm.data(), gs2.data()));
  EXPECT_EQ(gs, gs2) << "the same bytes on every run";
  auto bad = P.put(std::vector<float>(T * H, 1.0f));
  P.gpu->fill(bad.second.f() + 777, 1, NAN);
  EXPECT_FALSE(P.gpu->column_stats(bad.second.f(), T, H, gm.data(), gs.data()));
  EXPECT_TRUE(P.gpu->column_stats(x.second.f(), T, H, gm.data(), gs.data())) << "flag cleared";
}

// Column statistics kept on the GPU over a layer (ColumnStatsSlots, one download at flush) give
// the statistics file's numbers bit for bit as one column_stats download per input does, slot
// by slot in any interleaving, slots reused with another width; a NaN names the module of the
// first input that held one.
TEST(CudaBackend, DeferredColumnStatsEqualPerCallStats) {
  FP4KIT_REQUIRE_GPU();
  Pair P;
  const std::string q = "l.q", k = "l.k", o = "l.o";
  const std::vector<const std::string*> qk{&q, &k}, oo{&o};
  struct Call {
    const std::vector<const std::string*>* mods;
    size_t rows, width;
  };
  for (int round = 0; round < 2; ++round) {
    // round 1: the first slot is the 96-wide one (slots reused with another width)
    const size_t wa = round == 0 ? 320 : 96, wb = round == 0 ? 96 : 320;
    const std::vector<Call> calls{{&qk, 100, wa}, {&oo, 257, wb}, {&qk, 64, wa},
                                  {&oo, 1000, wb}, {&qk, 3, wa}, {&qk, 700, wa}};
    StatsCollector ref, got;
    ColumnStatsSlots slots(*P.gpu);
    std::vector<Buffer> keep;
    for (size_t i = 0; i < calls.size(); ++i) {
      const Call& c = calls[i];
      keep.push_back(P.gpu->upload(random_floats(c.rows * c.width, 40 + i + 10 * round, 3.0f)));
      std::vector<float> cm(c.width);
      std::vector<double> cs(c.width);
      ASSERT_TRUE(P.gpu->column_stats(keep.back().f(), c.rows, c.width, cm.data(), cs.data()));
      ref.linear_column_stats(*c.mods, cm.data(), cs.data(), c.rows, c.width);
      slots.add(*c.mods, keep.back().f(), c.rows, c.width);
    }
    slots.flush(got);
    const ActivationStats r = ref.result(), g = got.result();
    ASSERT_EQ(r.input_amax.size(), 3u);
    EXPECT_EQ(g.input_amax, r.input_amax) << "round " << round;
    EXPECT_EQ(g.token_count, r.token_count) << "round " << round;
    EXPECT_EQ(g.input_sq_sum, r.input_sq_sum) << "round " << round << ": not the same bytes";
    EXPECT_EQ(r.token_count.at("l.o"), 1257);
  }
  // A NaN entering l.o (the second input) and one entering l.q later: l.o is named.
  {
    StatsCollector got;
    ColumnStatsSlots slots(*P.gpu);
    auto a = P.gpu->upload(random_floats(50 * 64, 60));
    auto b = P.gpu->upload(random_floats(70 * 32, 61));
    auto c = P.gpu->upload(random_floats(50 * 64, 62));
    P.gpu->fill(b.f() + 333, 1, INFINITY);
    P.gpu->fill(c.f() + 7, 1, NAN);
    slots.add(qk, a.f(), 50, 64);
    slots.add(oo, b.f(), 70, 32);
    slots.add(qk, c.f(), 50, 64);
    try {
      slots.flush(got);
      ADD_FAILURE() << "no error for a NaN/Inf input";
    } catch (const fp4kit::Error& e) {
      EXPECT_NE(std::string(e.what()).find("non-finite activation entering l.o"), std::string::npos)
          << e.what();
    }
    // the next layer starts clean
    slots.add(qk, a.f(), 50, 64);
    EXPECT_NO_THROW(slots.flush(got));
    EXPECT_EQ(got.result().token_count.at("l.q"), 50);
  }
}

}  // namespace
}  // namespace fp4kit::engine
