// The multi-head latent attention block (blocks/mla) on the CPU backend against a float64
// re-implementation of transformers' DeepseekV3Attention written here: q-LoRA or q_proj, the
// normed latent expanded by kv_b_proj into no-RoPE keys and values, RoPE on the last qk_rope dims
// (DeepSeek's interleaved pairs, output de-interleaved as transformers does, or rotate_half), one
// shared RoPE key, value heads narrower than q/k heads; over two sequences in one batch. The
// observer must see each linear's own input.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "fp4kit/engine/blocks/mla.hpp"
#include "fp4kit/engine/weights.hpp"

namespace fp4kit::engine {
namespace {

using Vec = std::vector<double>;

std::vector<float> randv(std::mt19937& g, size_t n, float s) {
  std::normal_distribution<float> d(0.0f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

Vec mm(const Vec& x, size_t rows, size_t k, const std::vector<float>& w, size_t n) {
  Vec y(rows * n, 0.0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < n; ++j) {
      double s = 0;
      for (size_t c = 0; c < k; ++c) s += x[r * k + c] * w[j * k + c];
      y[r * n + j] = s;
    }
  return y;
}

Vec rmsn(const Vec& x, size_t rows, size_t d, const std::vector<float>& w, double eps) {
  Vec y(x.size());
  for (size_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (size_t i = 0; i < d; ++i) ss += x[r * d + i] * x[r * d + i];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    for (size_t i = 0; i < d; ++i) y[r * d + i] = x[r * d + i] * inv * w[i];
  }
  return y;
}

// transformers' RoPE of a dr-vector at position p (theta base, no scaling): interleaved =
// apply_rotary_pos_emb_interleave (pairs (2i, 2i+1), output [rotated evens | rotated odds]),
// else rotate_half.
std::vector<double> rope_ref(const double* x, size_t dr, size_t p, double theta, bool interleaved) {
  const size_t half = dr / 2;
  std::vector<double> out(dr);
  for (size_t i = 0; i < half; ++i) {
    const double ang = p / std::pow(theta, 2.0 * i / dr);
    const double c = std::cos(ang), s = std::sin(ang);
    const double a = interleaved ? x[2 * i] : x[i], b = interleaved ? x[2 * i + 1] : x[i + half];
    out[i] = a * c - b * s;
    out[i + half] = b * c + a * s;
  }
  return out;
}

struct Obs : ActivationObserver {
  std::map<std::string, std::vector<float>> amax;  // per module, per column
  void linear_input(const std::vector<const std::string*>& mods, const float* x, size_t rows,
                    size_t k) override {
    for (const std::string* m : mods) {
      auto& a = amax[*m];
      a.resize(k, 0.0f);
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < k; ++c) a[c] = std::max(a[c], std::fabs(x[r * k + c]));
    }
  }
  void routed(const std::string&, int64_t) override {}
};

void run_case(bool q_lora, bool interleaved) {
  std::mt19937 g(q_lora ? 11 : 12);
  const size_t H = 32, QR = 24, R = 16, dn = 8, dr = 8, dv = 6;
  const int nh = 3;
  const size_t dqk = dn + dr;
  const std::vector<size_t> lens = {7, 5};
  const size_t T = 12;
  auto w_norm = randv(g, H, 0.2f), w_qan = randv(g, QR, 0.2f), w_kvan = randv(g, R, 0.2f);
  for (auto* v : {&w_norm, &w_qan, &w_kvan})
    for (auto& x : *v) x += 1.0f;
  auto w_qa = randv(g, QR * H, 0.3f), w_q = randv(g, nh * dqk * (q_lora ? QR : H), 0.3f),
       w_kva = randv(g, (R + dr) * H, 0.3f), w_kvb = randv(g, nh * (dn + dv) * R, 0.3f),
       w_o = randv(g, H * nh * dv, 0.3f);
  const auto h0 = randv(g, T * H, 1.0f);

  auto be = make_cpu_backend();
  auto lin = [&](const char* name, const std::vector<float>& w, size_t n, size_t k) {
    LinearWeights L;
    L.module = name;
    L.n = n;
    L.k = k;
    L.w = w;
    return be->upload(std::move(L));
  };
  MlaConfig c;
  c.hidden = H;
  c.n_heads = nh;
  c.q_lora_rank = q_lora ? static_cast<int>(QR) : 0;
  c.kv_lora_rank = static_cast<int>(R);
  c.qk_nope = static_cast<int>(dn);
  c.qk_rope = static_cast<int>(dr);
  c.v_dim = static_cast<int>(dv);
  c.eps = 1e-5f;
  c.latent_eps = 1e-6f;
  c.rope_style = interleaved ? RopeStyle::Interleaved : RopeStyle::Half;
  c.rope_params.theta = 50.0;
  c.rope_params.rotary_dim = static_cast<int>(dr);
  c.scale = 0.3f;
  MlaWeights w;
  w.norm = be->upload(std::vector<float>(w_norm));
  if (q_lora) {
    w.q_a = lin("q_a", w_qa, QR, H);
    w.q_a_norm = be->upload(std::vector<float>(w_qan));
  }
  w.q = lin("q", w_q, nh * dqk, q_lora ? QR : H);
  w.kv_a = lin("kv_a", w_kva, R + dr, H);
  w.kv_a_norm = be->upload(std::vector<float>(w_kvan));
  w.kv_b = lin("kv_b", w_kvb, nh * (dn + dv), R);
  w.o = lin("o", w_o, H, nh * dv);
  MlaBlock block(c, std::move(w));
  const Batch batch = Batch::make(lens, 2048);
  Buffer h = be->upload(std::vector<float>(h0));
  Obs obs;
  block.forward(RunContext{*be, batch, &obs, false}, h.f());

  // ---- float64 reference ----
  const Vec x = rmsn(Vec(h0.begin(), h0.end()), T, H, w_norm, 1e-5);
  Vec qin = x;
  if (q_lora) qin = rmsn(mm(x, T, H, w_qa, QR), T, QR, w_qan, 1e-6);
  const Vec q = mm(qin, T, q_lora ? QR : H, w_q, nh * dqk);
  const Vec ckv = mm(x, T, H, w_kva, R + dr);
  Vec lat(T * R);
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < R; ++i) lat[t * R + i] = ckv[t * (R + dr) + i];
  lat = rmsn(lat, T, R, w_kvan, 1e-6);
  const Vec kv = mm(lat, T, R, w_kvb, nh * (dn + dv));
  Vec att(T * nh * dv, 0.0);
  size_t t0 = 0;
  for (size_t len : lens) {
    for (int hh = 0; hh < nh; ++hh) {
      std::vector<Vec> Q(len), K(len);
      for (size_t p = 0; p < len; ++p) {
        const size_t t = t0 + p;
        const double* qh = &q[t * nh * dqk + hh * dqk];
        const double* kvh = &kv[t * nh * (dn + dv) + hh * (dn + dv)];
        auto qr = rope_ref(qh + dn, dr, p, 50.0, interleaved);
        auto kr = rope_ref(&ckv[t * (R + dr) + R], dr, p, 50.0, interleaved);
        Q[p].assign(qh, qh + dn);
        Q[p].insert(Q[p].end(), qr.begin(), qr.end());
        K[p].assign(kvh, kvh + dn);
        K[p].insert(K[p].end(), kr.begin(), kr.end());
      }
      for (size_t i = 0; i < len; ++i) {
        std::vector<double> pr(i + 1);
        double mx = -INFINITY, sum = 0;
        for (size_t j = 0; j <= i; ++j) {
          double s = 0;
          for (size_t d = 0; d < dqk; ++d) s += Q[i][d] * K[j][d];
          pr[j] = s * 0.3;
          mx = std::max(mx, pr[j]);
        }
        for (auto& v : pr) sum += (v = std::exp(v - mx));
        for (size_t d = 0; d < dv; ++d) {
          double a = 0;
          for (size_t j = 0; j <= i; ++j)
            a += pr[j] / sum * kv[(t0 + j) * nh * (dn + dv) + hh * (dn + dv) + dn + d];
          att[(t0 + i) * nh * dv + hh * dv + d] = a;
        }
      }
    }
    t0 += len;
  }
  const Vec out = mm(att, T, nh * dv, w_o, H);
  double worst = 0;
  for (size_t i = 0; i < T * H; ++i) worst = std::max(worst, std::fabs(h.f()[i] - (h0[i] + out[i])));
  EXPECT_LT(worst, 2e-5) << "q_lora " << q_lora << " interleaved " << interleaved;

  // Each linear's observed input is its own activation (column amax against the reference).
  auto col_amax = [](const Vec& v, size_t rows, size_t k) {
    std::vector<double> a(k, 0.0);
    for (size_t r = 0; r < rows; ++r)
      for (size_t c2 = 0; c2 < k; ++c2) a[c2] = std::max(a[c2], std::fabs(v[r * k + c2]));
    return a;
  };
  std::map<std::string, std::vector<double>> want = {
      {"kv_a", col_amax(x, T, H)}, {"kv_b", col_amax(lat, T, R)},
      {"o", col_amax(att, T, nh * dv)}, {"q", col_amax(qin, T, q_lora ? QR : H)}};
  if (q_lora) want["q_a"] = col_amax(x, T, H);
  ASSERT_EQ(obs.amax.size(), want.size());
  for (const auto& [m, a] : want) {
    ASSERT_EQ(obs.amax[m].size(), a.size()) << m;
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(obs.amax[m][i], a[i], 1e-5 * (1 + a[i])) << m;
  }
}

TEST(MlaBlock, QLoraInterleavedRopeMatchesFloat64Reference) { run_case(true, true); }
TEST(MlaBlock, QProjRotateHalfMatchesFloat64Reference) { run_case(false, false); }

}  // namespace
}  // namespace fp4kit::engine
