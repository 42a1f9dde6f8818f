// Gated DeltaNet kernels of the CPU backend: the causal short convolution, the decay/beta gates
// and the gated delta rule, recurrent and in transformers' chunk-64 form (float32 throughout, as
// torch_chunk_gated_delta_rule / torch_recurrent_gated_delta_rule compute it). Heads run in
// parallel; each head's arithmetic is sequential, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine {

void causal_conv1d_silu(const float* x, size_t len, size_t channels, size_t stride,
                        const float* weight, size_t K, float* out) {
  parallel_for(0, channels, 64, [&](size_t c0, size_t c1) {
    for (size_t t = 0; t < len; ++t)
      for (size_t c = c0; c < c1; ++c) {
        float s = 0.0f;
        for (size_t j = 0; j < K; ++j) {
          const size_t back = K - 1 - j;  // tap K-1 reads the current token
          if (t >= back) s += weight[c * K + j] * x[(t - back) * stride + c];
        }
        out[t * channels + c] = s / (1.0f + std::exp(-s));
      }
  });
}

void gdn_gates(float* a, float* b, size_t rows, size_t heads, const float* A_log,
               const float* dt_bias) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t h = 0; h < heads; ++h) {
      const float x = a[r * heads + h] + dt_bias[h];
      const float sp = x > 20.0f ? x : std::log1p(std::exp(x));
      a[r * heads + h] = -std::exp(A_log[h]) * sp;
      b[r * heads + h] = 1.0f / (1.0f + std::exp(-b[r * heads + h]));
    }
}

namespace {

// x / sqrt(sum x^2 + 1e-6) (the FLA / transformers l2norm with its fixed eps).
void l2norm(const float* x, int d, float* out) {
  double ss = 0.0;
  for (int i = 0; i < d; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss) + 1e-6f);
  for (int i = 0; i < d; ++i) out[i] = x[i] * inv;
}

float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// One value head over the whole sequence; q, k already normalised [len, dk], v [len, dv] and
// out [len, dv] with row stride `os`.
void recurrent_head(const float* q, const float* k, const float* v, const float* g,
                    const float* beta, size_t gs, size_t len, int dk, int dv, float* out,
                    size_t os) {
  std::vector<float> S(static_cast<size_t>(dk) * dv, 0.0f), kv(static_cast<size_t>(dv));
  for (size_t t = 0; t < len; ++t) {
    const float decay = std::exp(g[t * gs]);
    for (float& s : S) s *= decay;
    const float* kt = k + t * dk;
    std::fill(kv.begin(), kv.end(), 0.0f);
    for (int a = 0; a < dk; ++a)
      for (int c = 0; c < dv; ++c) kv[c] += S[a * dv + c] * kt[a];
    const float bt = beta[t * gs];
    for (int c = 0; c < dv; ++c) kv[c] = (v[t * dv + c] - kv[c]) * bt;  // delta
    for (int a = 0; a < dk; ++a)
      for (int c = 0; c < dv; ++c) S[a * dv + c] += kt[a] * kv[c];
    float* o = out + t * os;
    const float* qt = q + t * dk;
    for (int c = 0; c < dv; ++c) o[c] = 0.0f;
    for (int a = 0; a < dk; ++a)
      for (int c = 0; c < dv; ++c) o[c] += S[a * dv + c] * qt[a];
  }
}

// torch_chunk_gated_delta_rule for one value head (chunk C = 64, zero padding at the end).
void chunked_head(const float* q, const float* k, const float* v, const float* g,
                  const float* beta, size_t gs, size_t len, int dk, int dv, float* out,
                  size_t os) {
  constexpr size_t C = 64;
  const size_t DK = static_cast<size_t>(dk), DV = static_cast<size_t>(dv);
  std::vector<float> S(DK * DV, 0.0f);
  std::vector<float> cum(C), kb(C * DK), U(C * DV), W(C * DK), A(C * C), Iqk(C * C),
      vnew(C * DV), qd(C * DK), kd(C * DK);
  for (size_t c0 = 0; c0 < len; c0 += C) {
    const size_t n = std::min(C, len - c0);  // padded rows (q = k = v = beta = g = 0) do nothing
    float acc = 0.0f;
    for (size_t i = 0; i < C; ++i) cum[i] = (acc += i < n ? g[(c0 + i) * gs] : 0.0f);
    const float last = cum[C - 1];
    for (size_t i = 0; i < n; ++i) {
      const float bt = beta[(c0 + i) * gs];
      const float* ki = k + (c0 + i) * DK;
      const float* vi = v + (c0 + i) * DV;
      for (size_t a = 0; a < DK; ++a) kb[i * DK + a] = ki[a] * bt;
      for (size_t c = 0; c < DV; ++c) U[i * DV + c] = vi[c] * bt;  // v_beta, solved in place
      const float e = std::exp(cum[i]);
      for (size_t a = 0; a < DK; ++a) W[i * DK + a] = kb[i * DK + a] * e;  // decayed k_beta
    }
    for (size_t i = 0; i < n; ++i) {
      const float* qi = q + (c0 + i) * DK;
      for (size_t j = 0; j <= i; ++j) {
        const float* kj = k + (c0 + j) * DK;
        const float decay = std::exp(cum[i] - cum[j]);
        A[i * C + j] = dot(kb.data() + i * DK, kj, dk) * decay;
        Iqk[i * C + j] = dot(qi, kj, dk) * decay;
      }
    }
    // (I + strictly_lower(A)) X = B, forward substitution, for X = U and X = W.
    for (size_t i = 1; i < n; ++i)
      for (size_t j = 0; j < i; ++j) {
        const float f = A[i * C + j];
        for (size_t c = 0; c < DV; ++c) U[i * DV + c] -= f * U[j * DV + c];
        for (size_t a = 0; a < DK; ++a) W[i * DK + a] -= f * W[j * DK + a];
      }
    for (size_t i = 0; i < n; ++i) {
      const float* qi = q + (c0 + i) * DK;
      const float* ki = k + (c0 + i) * DK;
      const float eq = std::exp(cum[i]), ek = std::exp(last - cum[i]);
      for (size_t a = 0; a < DK; ++a) {
        qd[i * DK + a] = qi[a] * eq;
        kd[i * DK + a] = ki[a] * ek;
      }
    }
    // v_new = U - W S; out = qd S + Iqk v_new; S = S * exp(last) + kd^T v_new.
    for (size_t i = 0; i < n; ++i) {
      float* vn = vnew.data() + i * DV;
      float* o = out + (c0 + i) * os;
      for (size_t c = 0; c < DV; ++c) {
        vn[c] = 0.0f;
        o[c] = 0.0f;
      }
      for (size_t a = 0; a < DK; ++a) {
        const float w = W[i * DK + a], qq = qd[i * DK + a];
        const float* Sa = S.data() + a * DV;
        for (size_t c = 0; c < DV; ++c) {
          vn[c] += w * Sa[c];
          o[c] += qq * Sa[c];
        }
      }
      for (size_t c = 0; c < DV; ++c) vn[c] = U[i * DV + c] - vn[c];
    }
    for (size_t i = 0; i < n; ++i) {
      float* o = out + (c0 + i) * os;
      for (size_t j = 0; j <= i; ++j) {
        const float f = Iqk[i * C + j];
        const float* vn = vnew.data() + j * DV;
        for (size_t c = 0; c < DV; ++c) o[c] += f * vn[c];
      }
    }
    const float cd = std::exp(last);
    for (size_t a = 0; a < DK; ++a) {
      float* Sa = S.data() + a * DV;
      for (size_t c = 0; c < DV; ++c) Sa[c] *= cd;
      for (size_t i = 0; i < n; ++i) {
        const float f = kd[i * DK + a];
        const float* vn = vnew.data() + i * DV;
        for (size_t c = 0; c < DV; ++c) Sa[c] += f * vn[c];
      }
    }
  }
}

}  // namespace

void gated_delta_rule(const float* q, const float* k, size_t qk_stride, const float* v,
                      size_t v_stride, const float* g, const float* beta, size_t len, int nk,
                      int nv, int dk, int dv, bool chunked, float* out) {
  const int group = nv / nk;
  const float qscale = 1.0f / std::sqrt(static_cast<float>(dk));
  parallel_for(0, static_cast<size_t>(nv), 1, [&](size_t h0, size_t h1) {
    std::vector<float> qh(len * dk), kh(len * dk), vh(len * dv);
    for (size_t h = h0; h < h1; ++h) {
      const size_t kh_idx = h / static_cast<size_t>(group);
      for (size_t t = 0; t < len; ++t) {
        l2norm(q + t * qk_stride + kh_idx * dk, dk, qh.data() + t * dk);
        for (int a = 0; a < dk; ++a) qh[t * dk + a] *= qscale;
        l2norm(k + t * qk_stride + kh_idx * dk, dk, kh.data() + t * dk);
        std::copy_n(v + t * v_stride + h * dv, dv, vh.data() + t * dv);
      }
      const size_t os = static_cast<size_t>(nv) * dv;
      float* o = out + h * dv;
      if (chunked)
        chunked_head(qh.data(), kh.data(), vh.data(), g + h, beta + h, nv, len, dk, dv, o, os);
      else
        recurrent_head(qh.data(), kh.data(), vh.data(), g + h, beta + h, nv, len, dk, dv, o, os);
    }
  });
}

}  // namespace fp4kit::engine
