// Gated DeltaNet pieces against float64 re-implementations of their definitions
// (transformers' torch_recurrent_gated_delta_rule, causal_conv1d_fn, the decay and beta gates),
// the chunk-64 form against the plain recurrence, and partial RoPE (Qwen3-Next / Qwen3.5).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/engine_support.hpp"
#include "fp4kit/engine/backend.hpp"
#include "fp4kit/engine/blocks/gated_delta_net.hpp"
#include "fp4kit/engine/rope.hpp"
#include "fp4kit/engine/weights.hpp"

namespace fp4kit::engine {
namespace {

std::vector<float> randv(std::mt19937& g, size_t n, float s = 1.0f) {
  return testing::random_normal(g, n, s);
}

// The recurrence in float64: per value head h (key head h / (nv / nk)), S = 0;
// S *= exp(g); S += k (v - S^T k) beta; o = S^T q, with q, k L2-normalised and q / sqrt(dk).
std::vector<double> delta_rule_f64(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, const std::vector<float>& g,
                                   const std::vector<float>& beta, size_t T, int nk, int nv,
                                   int dk, int dv) {
  std::vector<double> out(T * nv * dv);
  for (int h = 0; h < nv; ++h) {
    const int kh = h / (nv / nk);
    std::vector<double> S(dk * dv, 0.0);
    for (size_t t = 0; t < T; ++t) {
      std::vector<double> qt(dk), kt(dk);
      double sq = 0, sk = 0;
      for (int a = 0; a < dk; ++a) {
        qt[a] = q[(t * nk + kh) * dk + a];
        kt[a] = k[(t * nk + kh) * dk + a];
        sq += qt[a] * qt[a];
        sk += kt[a] * kt[a];
      }
      for (int a = 0; a < dk; ++a) {
        qt[a] /= std::sqrt(sq + 1e-6) * std::sqrt(static_cast<double>(dk));
        kt[a] /= std::sqrt(sk + 1e-6);
      }
      const double decay = std::exp(static_cast<double>(g[t * nv + h]));
      for (double& s : S) s *= decay;
      for (int c = 0; c < dv; ++c) {
        double kv = 0;
        for (int a = 0; a < dk; ++a) kv += S[a * dv + c] * kt[a];
        const double delta = (v[(t * nv + h) * dv + c] - kv) * beta[t * nv + h];
        for (int a = 0; a < dk; ++a) S[a * dv + c] += kt[a] * delta;
      }
      for (int c = 0; c < dv; ++c) {
        double o = 0;
        for (int a = 0; a < dk; ++a) o += S[a * dv + c] * qt[a];
        out[(t * nv + h) * dv + c] = o;
      }
    }
  }
  return out;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// 150 tokens: three chunks of 64, the last one padded.
TEST(GatedDeltaNet, ChunkedAndRecurrentEqualTheFloat64Recurrence) {
  std::mt19937 gen(5);
  const size_t T = 150;
  const int nk = 2, nv = 4, dk = 16, dv = 8;
  auto q = randv(gen, T * nk * dk, 1.0f), k = randv(gen, T * nk * dk, 1.0f);
  auto v = randv(gen, T * nv * dv, 1.0f);
  std::vector<float> g(T * nv), beta(T * nv);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = -0.3f * u(gen);  // decays exp(g) in (0.74, 1]
    beta[i] = u(gen);
  }
  const auto want = delta_rule_f64(q, k, v, g, beta, T, nk, nv, dk, dv);
  const double scale = max_abs(want);
  ASSERT_GT(scale, 0.1);
  auto be = make_cpu_backend();
  for (bool chunked : {false, true}) {
    std::vector<float> out(T * nv * dv, 0.0f);
    be->gated_delta_rule(q.data(), k.data(), nk * dk, v.data(), nv * dv, g.data(), beta.data(), T,
                         nk, nv, dk, dv, chunked, out.data());
    double worst = 0;
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(out[i] - want[i]));
    EXPECT_LT(worst, 2e-5 * scale) << (chunked ? "chunked" : "recurrent");
  }
  // A property of the state: with beta = 0 nothing is ever written, the output is 0.
  std::vector<float> zero(T * nv, 0.0f), out(T * nv * dv, 1.0f);
  be->gated_delta_rule(q.data(), k.data(), nk * dk, v.data(), nv * dv, g.data(), zero.data(), T,
                       nk, nv, dk, dv, true, out.data());
  for (float x : out) ASSERT_EQ(x, 0.0f);
}

TEST(GatedDeltaNet, CausalConvolutionThenSilu) {
  std::mt19937 gen(6);
  const size_t T = 9, C = 5, K = 4, stride = 7;  // x rows wider than the channels read
  auto x = randv(gen, T * stride, 1.0f), w = randv(gen, C * K, 1.0f);
  std::vector<float> out(T * C);
  make_cpu_backend()->causal_conv1d_silu(x.data(), T, C, stride, w.data(), K, out.data());
  for (size_t t = 0; t < T; ++t)
    for (size_t c = 0; c < C; ++c) {
      double s = 0;  // tap j reads x[t - (K - 1) + j]; before the sequence: zeros
      for (size_t j = 0; j < K; ++j) {
        const long src = static_cast<long>(t) - static_cast<long>(K - 1) + static_cast<long>(j);
        if (src >= 0) s += static_cast<double>(w[c * K + j]) * x[src * stride + c];
      }
      EXPECT_NEAR(out[t * C + c], s / (1 + std::exp(-s)), 1e-5) << t << " " << c;
    }
}

TEST(GatedDeltaNet, DecayAndBetaGates) {
  const float A_log[2] = {std::log(2.0f), std::log(0.5f)}, dt_bias[2] = {0.25f, -1.0f};
  float a[4] = {0.5f, 30.0f, -3.0f, 0.0f}, b[4] = {0.0f, 2.0f, -1.0f, 5.0f};
  make_cpu_backend()->gdn_gates(a, b, 2, 2, A_log, dt_bias);
  auto softplus = [](double x) { return x > 20 ? x : std::log1p(std::exp(x)); };
  EXPECT_NEAR(a[0], -2.0 * softplus(0.75), 1e-6);
  EXPECT_NEAR(a[1], -0.5 * 29.0, 1e-5);  // above the threshold: the identity
  EXPECT_NEAR(a[2], -2.0 * softplus(-2.75), 1e-6);
  EXPECT_NEAR(a[3], -0.5 * softplus(-1.0), 1e-6);
  EXPECT_NEAR(b[0], 0.5, 1e-7);
  EXPECT_NEAR(b[1], 1.0 / (1.0 + std::exp(-2.0)), 1e-6);
  EXPECT_NEAR(b[3], 1.0 / (1.0 + std::exp(-5.0)), 1e-6);
}

TEST(GatedDeltaNet, PartialRopeRotatesTheLeadingDimsOnly) {
  nlohmann::json cfg = {{"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 100.0},
                                             {"partial_rotary_factor", 0.25}}}};
  const RopeParams p = RopeParams::from_config(cfg, 10000.0, 16, "test");
  EXPECT_EQ(p.rotary_dim, 4);
  EXPECT_EQ(p.theta, 100.0);
  const Rope rope(p);
  ASSERT_EQ(rope.inv_freq().size(), 2u);
  std::vector<float> x(16);
  for (int i = 0; i < 16; ++i) x[i] = static_cast<float>(i + 1);
  const auto x0 = x;
  rope.apply(x.data(), 1, 16, 3);
  // Pairs (0, 2) and (1, 3) with frequencies 1 / 100^(0/4), 1 / 100^(2/4).
  for (int i = 0; i < 2; ++i) {
    const double ang = 3.0 * std::pow(100.0, -2.0 * i / 4.0);
    EXPECT_NEAR(x[i], x0[i] * std::cos(ang) - x0[i + 2] * std::sin(ang), 1e-5);
    EXPECT_NEAR(x[i + 2], x0[i + 2] * std::cos(ang) + x0[i] * std::sin(ang), 1e-5);
  }
  for (int i = 4; i < 16; ++i) EXPECT_EQ(x[i], x0[i]) << i;
  // The family default applies when the config is silent; an odd rotary width is refused.
  EXPECT_EQ(RopeParams::from_config(nlohmann::json::object(), 1e4, 16, "t", 0.25).rotary_dim, 4);
  EXPECT_ANY_THROW(RopeParams::from_config({{"partial_rotary_factor", 0.1875}}, 1e4, 16, "t"));
}


// The whole block (Qwen3.5 naming) over two sequences of one batch (90 tokens: two chunks; 10
// tokens), against float64: zero-centred input norm, projections, conv + SiLU, gates, the
// recurrence, gated RMSNorm * silu(z), out_proj, residual. The sequences do not mix.
TEST(GatedDeltaNet, BlockMatchesFloat64Reference) {
  std::mt19937 gen(8);
  const size_t H = 32;
  const int nk = 2, nv = 4, dk = 8, dv = 8, K = 4;
  const size_t kd = nk * dk, vd = nv * dv, C = 2 * kd + vd;
  auto be = make_cpu_backend();
  auto lin = [&](const char* name, size_t n, size_t k, std::vector<float>* keep) {
    LinearWeights w;
    w.module = name;
    w.n = n;
    w.k = k;
    w.w = randv(gen, n * k, 1.0f / std::sqrt(static_cast<float>(k)));
    *keep = w.w;
    return be->upload(std::move(w));
  };
  std::vector<float> wqkv, wz, wb, wa, wo;
  GdnWeights w;
  const auto norm = randv(gen, H, 0.3f), conv = randv(gen, C * K, 0.5f), gnorm = randv(gen, dv, 0.3f);
  const auto dt = randv(gen, nv, 0.5f);
  std::vector<float> alog(nv);
  for (int h = 0; h < nv; ++h) alog[h] = std::log(0.5f + 0.4f * h);
  w.norm = be->upload(std::vector<float>(norm));
  w.qkv = lin("in_proj_qkv", C, H, &wqkv);
  w.z = lin("in_proj_z", vd, H, &wz);
  w.b = lin("in_proj_b", nv, H, &wb);
  w.a = lin("in_proj_a", nv, H, &wa);
  w.in_modules = {"in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a"};
  w.conv = be->upload(std::vector<float>(conv));
  w.A_log = be->upload(std::vector<float>(alog));
  w.dt_bias = be->upload(std::vector<float>(dt));
  w.gate_norm = be->upload(std::vector<float>(gnorm));
  w.out = lin("out_proj", H, vd, &wo);
  GdnConfig c;
  c.hidden = H;
  c.norm_one_plus = true;
  c.nk = nk;
  c.nv = nv;
  c.dk = dk;
  c.dv = dv;
  c.kernel = K;
  GatedDeltaNetBlock block(c, std::move(w));
  const std::vector<size_t> lens = {90, 10};
  const Batch batch = Batch::make(lens, 4096);
  const auto h0 = randv(gen, 100 * H, 1.0f);
  Buffer hb = be->upload(std::vector<float>(h0));
  block.forward(RunContext{*be, batch, nullptr, false}, hb.f());

  auto mm = [](const std::vector<double>& x, size_t rows, size_t k, const std::vector<float>& W,
               size_t n) {
    std::vector<double> y(rows * n, 0.0);
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < n; ++j)
        for (size_t i = 0; i < k; ++i) y[r * n + j] += x[r * k + i] * W[j * k + i];
    return y;
  };
  double worst = 0, scale = 0;
  size_t row0 = 0;
  for (size_t T : lens) {
    std::vector<double> x(T * H);
    for (size_t t = 0; t < T; ++t) {
      double ss = 0;
      for (size_t i = 0; i < H; ++i) ss += static_cast<double>(h0[(row0 + t) * H + i]) * h0[(row0 + t) * H + i];
      const double inv = 1.0 / std::sqrt(ss / H + 1e-6);
      for (size_t i = 0; i < H; ++i) x[t * H + i] = h0[(row0 + t) * H + i] * inv * (1.0 + norm[i]);
    }
    const auto mixed = mm(x, T, H, wqkv, C), z = mm(x, T, H, wz, vd);
    const auto b = mm(x, T, H, wb, nv), a = mm(x, T, H, wa, nv);
    std::vector<float> q(T * kd), k(T * kd), v(T * vd), g(T * nv), beta(T * nv);
    for (size_t t = 0; t < T; ++t) {
      for (size_t ch = 0; ch < C; ++ch) {
        double s = 0;
        for (int j = 0; j < K; ++j) {
          const long src = static_cast<long>(t) - (K - 1) + j;
          if (src >= 0) s += conv[ch * K + j] * mixed[src * C + ch];
        }
        const float o = static_cast<float>(s / (1 + std::exp(-s)));
        if (ch < kd) q[t * kd + ch] = o;
        else if (ch < 2 * kd) k[t * kd + ch - kd] = o;
        else v[t * vd + ch - 2 * kd] = o;
      }
      for (int h = 0; h < nv; ++h) {
        const double xx = a[t * nv + h] + dt[h];
        g[t * nv + h] = static_cast<float>(-std::exp(static_cast<double>(alog[h])) * std::log1p(std::exp(xx)));
        beta[t * nv + h] = static_cast<float>(1 / (1 + std::exp(-b[t * nv + h])));
      }
    }
    const auto core = delta_rule_f64(q, k, v, g, beta, T, nk, nv, dk, dv);
    std::vector<double> y(T * vd);
    for (size_t r = 0; r < T * nv; ++r) {
      double ss = 0;
      for (int i = 0; i < dv; ++i) ss += core[r * dv + i] * core[r * dv + i];
      const double inv = 1.0 / std::sqrt(ss / dv + 1e-6);
      for (int i = 0; i < dv; ++i) {
        const double zz = z[r * dv + i];
        y[r * dv + i] = core[r * dv + i] * inv * gnorm[i] * zz / (1 + std::exp(-zz));
      }
    }
    const auto out = mm(y, T, vd, wo, H);
    for (size_t i = 0; i < T * H; ++i) {
      const double want = h0[row0 * H + i] + out[i];
      worst = std::max(worst, std::fabs(hb.f()[row0 * H + i] - want));
      scale = std::max(scale, std::fabs(out[i]));
    }
    row0 += T;
  }
  ASSERT_GT(scale, 0.1);
  EXPECT_LT(worst, 1e-4 * scale);
}

}  // namespace
}  // namespace fp4kit::engine
