// Backend ops that DeepSeek-V3 / GLM-4-MoE need, on the CPU backend against float64
// re-implementations written here from transformers' definitions: the group-limited sigmoid
// router (DeepseekV3TopkRouter / Glm4MoeTopkRouter, noaux_tc), attention whose value heads are
// narrower than its query/key heads (MLA), and the strided column copy.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "fp4kit/engine/backend.hpp"

namespace fp4kit::engine {
namespace {

std::vector<float> randv(std::mt19937& g, size_t n, float s) {
  std::normal_distribution<float> d(0.0f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

struct RefRoute {
  std::vector<int> idx;    // selected experts (any order)
  std::vector<double> w;   // their weights, same order
};

// DeepseekV3TopkRouter.forward for one token in float64, step by step as transformers writes it
// (topk over groups and experts by plain sorting: the scores here are distinct).
RefRoute ref_route(const float* lg, size_t E, const std::vector<float>& bias, size_t G,
                   size_t topk_group, size_t K, bool norm, double scaling) {
  std::vector<double> s(E), c(E);
  for (size_t e = 0; e < E; ++e) {
    s[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(lg[e])));
    c[e] = s[e] + bias[e];
  }
  const size_t per = E / G;
  std::vector<double> gs(G);
  for (size_t g = 0; g < G; ++g) {
    std::vector<double> v(c.begin() + g * per, c.begin() + (g + 1) * per);
    std::sort(v.rbegin(), v.rend());
    gs[g] = v[0] + v[1];  // .topk(2).sum()
  }
  std::vector<size_t> gi(G);
  std::iota(gi.begin(), gi.end(), 0);
  std::sort(gi.begin(), gi.end(), [&](size_t a, size_t b) { return gs[a] > gs[b]; });
  std::set<size_t> keep(gi.begin(), gi.begin() + topk_group);
  for (size_t e = 0; e < E; ++e)
    if (!keep.count(e / per)) c[e] = -INFINITY;  // masked_fill(~score_mask, -inf)
  std::vector<int> ei(E);
  std::iota(ei.begin(), ei.end(), 0);
  std::sort(ei.begin(), ei.end(), [&](int a, int b) { return c[a] > c[b]; });
  RefRoute r;
  double sum = 0;
  for (size_t j = 0; j < K; ++j) {
    r.idx.push_back(ei[j]);
    r.w.push_back(s[ei[j]]);  // scores.gather: the unbiased sigmoid
    sum += s[ei[j]];
  }
  for (double& w : r.w) w = (norm ? w / (sum + 1e-20) : w) * scaling;
  return r;
}

// Token t's K routes in `r` against `want`: the same experts, weights within 1e-6 relative (the
// order within the k is free: transformers' topk is unsorted).
void expect_routes(const Routes& r, size_t t, const RefRoute& want, double tol) {
  const size_t K = r.k;
  std::vector<std::pair<int, double>> a, b;
  for (size_t j = 0; j < K; ++j) {
    a.emplace_back(r.expert[t * K + j], r.weight[t * K + j]);
    b.emplace_back(want.idx[j], want.w[j]);
  }
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  for (size_t j = 0; j < K; ++j) {
    EXPECT_EQ(a[j].first, b[j].first) << "token " << t;
    EXPECT_NEAR(a[j].second, b[j].second, tol * std::max(1.0, std::fabs(b[j].second)));
  }
}

// 16 experts in 4 groups, top-2 groups, top-3 experts, with a selection bias large enough to
// change which experts win (checked), normalised or not, scaled by routed_scaling_factor.
TEST(MlaOps, GroupLimitedSigmoidRouterMatchesFloat64Reference) {
  std::mt19937 g(3);
  const size_t T = 64, E = 16, G = 4, TG = 2, K = 3;
  const auto logits = randv(g, T * E, 1.5f);
  const auto bias = randv(g, E, 0.4f);
  auto be = make_cpu_backend();
  const Buffer lb = be->upload(std::vector<float>(logits));
  const Buffer bb = be->upload(std::vector<float>(bias));
  size_t bias_changed = 0, group_changed = 0;
  for (bool norm : {true, false}) {
    RouterOptions o;
    o.kind = RouterKind::SigmoidGroupTopk;
    o.top_k = K;
    o.norm_topk = norm;
    o.selection_bias = bb.f();
    o.n_group = G;
    o.topk_group = TG;
    o.scaling = 2.5f;
    const Routes r = be->route(lb.f(), T, E, o);
    ASSERT_EQ(r.k, K);
    const std::vector<float> zero(E, 0.0f);
    for (size_t t = 0; t < T; ++t) {
      const RefRoute want = ref_route(logits.data() + t * E, E, bias, G, TG, K, norm, 2.5);
      expect_routes(r, t, want, 1e-6);
      if (norm) {
        double sum = 0;
        for (size_t j = 0; j < K; ++j) sum += r.weight[t * K + j];
        EXPECT_NEAR(sum, 2.5, 1e-5);  // normalised, then scaled
        // The features matter on this data: without the bias, or without the group stage,
        // the selection differs for some tokens.
        const RefRoute nb = ref_route(logits.data() + t * E, E, zero, G, TG, K, norm, 2.5);
        const RefRoute ng = ref_route(logits.data() + t * E, E, bias, G, G, K, norm, 2.5);
        auto sorted = [](std::vector<int> v) { std::sort(v.begin(), v.end()); return v; };
        bias_changed += sorted(nb.idx) != sorted(want.idx);
        group_changed += sorted(ng.idx) != sorted(want.idx);
      }
    }
  }
  EXPECT_GT(bias_changed, 5u);
  EXPECT_GT(group_changed, 5u);
}

// n_group = 1 (GLM-4.5, Kimi-K2): the group stage is a no-op; a null bias is zeros.
TEST(MlaOps, SingleGroupRouterIsPlainTopkOfBiasedSigmoid) {
  std::mt19937 g(4);
  const size_t T = 16, E = 8, K = 2;
  const auto logits = randv(g, T * E, 1.0f);
  auto be = make_cpu_backend();
  const Buffer lb = be->upload(std::vector<float>(logits));
  RouterOptions o;
  o.kind = RouterKind::SigmoidGroupTopk;
  o.top_k = K;
  const Routes r = be->route(lb.f(), T, E, o);
  for (size_t t = 0; t < T; ++t) {
    const float* lg = logits.data() + t * E;
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return lg[a] > lg[b]; });
    for (size_t j = 0; j < K; ++j) {
      EXPECT_EQ(r.expert[t * K + j], order[j]);
      EXPECT_NEAR(r.weight[t * K + j], 1.0 / (1.0 + std::exp(-double(lg[order[j]]))), 1e-6);
    }
  }
}

// DeepseekV2TopkRouter.forward for one token in float64: softmax over all experts; greedy (G = 1)
// or group_limited_greedy (a group scores its max, the topk_group best groups keep their scores,
// the rest are set to 0); top-k; weight = score x routed_scaling_factor (no renormalisation).
RefRoute ref_route_v2(const float* lg, size_t E, size_t G, size_t topk_group, size_t K,
                      double scaling) {
  std::vector<double> p(E);
  double mx = -INFINITY, sum = 0;
  for (size_t e = 0; e < E; ++e) mx = std::max(mx, static_cast<double>(lg[e]));
  for (size_t e = 0; e < E; ++e) sum += (p[e] = std::exp(lg[e] - mx));
  for (double& v : p) v /= sum;
  const size_t per = E / G;
  std::vector<double> gs(G, -INFINITY);
  for (size_t e = 0; e < E; ++e) gs[e / per] = std::max(gs[e / per], p[e]);  // .max(dim=-1)
  std::vector<size_t> gi(G);
  std::iota(gi.begin(), gi.end(), 0);
  std::sort(gi.begin(), gi.end(), [&](size_t a, size_t b) { return gs[a] > gs[b]; });
  const std::set<size_t> keep(gi.begin(), gi.begin() + topk_group);
  for (size_t e = 0; e < E; ++e)
    if (!keep.count(e / per)) p[e] = 0.0;  // masked_fill(~score_mask, 0.0)
  std::vector<int> ei(E);
  std::iota(ei.begin(), ei.end(), 0);
  std::sort(ei.begin(), ei.end(), [&](int a, int b) { return p[a] > p[b]; });
  RefRoute r;
  for (size_t j = 0; j < K; ++j) {
    r.idx.push_back(ei[j]);
    r.w.push_back(p[ei[j]] * scaling);
  }
  return r;
}

// DeepSeek-V2's routers: greedy (SoftmaxTopk with routed_scaling_factor, unnormalised) and
// group_limited_greedy (SoftmaxGroupTopk: 16 experts in 4 groups, 2 compete, top-3), against the
// float64 reference; the group stage changes the winners of some tokens (checked).
TEST(MlaOps, DeepseekV2SoftmaxRoutersMatchFloat64Reference) {
  std::mt19937 g(6);
  const size_t T = 64, E = 16, G = 4, TG = 2, K = 3;
  const auto logits = randv(g, T * E, 1.5f);
  auto be = make_cpu_backend();
  const Buffer lb = be->upload(std::vector<float>(logits));
  size_t group_changed = 0;
  for (bool grouped : {false, true}) {
    RouterOptions o;
    o.kind = grouped ? RouterKind::SoftmaxGroupTopk : RouterKind::SoftmaxTopk;
    o.top_k = K;
    o.n_group = grouped ? G : 1;
    o.topk_group = grouped ? TG : 1;
    o.scaling = 16.0f;  // DeepSeek-V2's routed_scaling_factor
    const Routes r = be->route(lb.f(), T, E, o);
    ASSERT_EQ(r.k, K);
    for (size_t t = 0; t < T; ++t) {
      const RefRoute want =
          ref_route_v2(logits.data() + t * E, E, grouped ? G : 1, grouped ? TG : 1, K, 16.0);
      SCOPED_TRACE(grouped ? "group_limited_greedy" : "greedy");
      expect_routes(r, t, want, 1e-5);
      if (grouped) {
        const RefRoute plain = ref_route_v2(logits.data() + t * E, E, 1, 1, K, 16.0);
        auto sorted = [](std::vector<int> v) { std::sort(v.begin(), v.end()); return v; };
        group_changed += sorted(plain.idx) != sorted(want.idx);
      }
    }
  }
  EXPECT_GT(group_changed, 5u);
}

// Causal attention with q/k heads of 12 and value heads of 8 (v in its own buffer with its own
// stride), two query heads per kv head: out against a float64 softmax(q k^T s) v.
TEST(MlaOps, AttentionWithNarrowerValueHeadsMatchesFloat64Reference) {
  std::mt19937 g(5);
  const size_t L = 9;
  const int nh = 4, nkv = 2, d = 12, dv = 8;
  const size_t qs = nh * d, ks = nkv * d, vs = nkv * dv + 3;  // padded value rows
  const auto q = randv(g, L * qs, 1.0f), k = randv(g, L * ks, 1.0f), v = randv(g, L * vs, 1.0f);
  auto be = make_cpu_backend();
  const Buffer qb = be->upload(std::vector<float>(q)), kb = be->upload(std::vector<float>(k)),
               vb = be->upload(std::vector<float>(v));
  Buffer ob = be->alloc(L * nh * dv * sizeof(float));
  AttentionOptions o;
  o.scale = 0.37f;
  o.v_dim = dv;
  o.v_stride = vs;
  be->attention(qb.f(), qs, kb.f(), vb.f(), ks, L, nh, nkv, d, o, ob.f(), nh * dv);
  double worst = 0;
  for (size_t i = 0; i < L; ++i)
    for (int h = 0; h < nh; ++h) {
      const int kh = h / (nh / nkv);
      std::vector<double> p(i + 1);
      double mx = -INFINITY, sum = 0;
      for (size_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int c = 0; c < d; ++c) s += double(q[i * qs + h * d + c]) * k[j * ks + kh * d + c];
        p[j] = s * 0.37;
        mx = std::max(mx, p[j]);
      }
      for (auto& x : p) sum += (x = std::exp(x - mx));
      for (int c = 0; c < dv; ++c) {
        double acc = 0;
        for (size_t j = 0; j <= i; ++j) acc += p[j] / sum * v[j * vs + kh * dv + c];
        worst = std::max(worst, std::fabs(acc - ob.f()[i * nh * dv + h * dv + c]));
      }
    }
  EXPECT_LT(worst, 1e-5);
}

TEST(MlaOps, CopyStridedMovesColumnBlocks) {
  auto be = make_cpu_backend();
  std::vector<float> src(5 * 7);
  std::iota(src.begin(), src.end(), 0.0f);
  const Buffer s = be->upload(std::vector<float>(src));
  Buffer d = be->alloc(5 * 4 * sizeof(float));
  be->fill(d.f(), 20, -1.0f);
  be->copy_strided(s.f() + 2, 7, 5, 3, d.f() + 1, 4);
  for (size_t r = 0; r < 5; ++r) {
    EXPECT_EQ(d.f()[r * 4], -1.0f);
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(d.f()[r * 4 + 1 + c], src[r * 7 + 2 + c]);
  }
}

}  // namespace
}  // namespace fp4kit::engine
