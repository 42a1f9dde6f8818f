// CPU kernels of the engine. Every loop writes disjoint outputs, so results do not depend on the
// thread count (sgemm splits rows/columns, not the K sum, in OpenBLAS).
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/route_exp.hpp"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iterator>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "fp4kit/numeric/parallel.hpp"

extern "C" void openblas_set_num_threads(int num_threads);
extern "C" char* openblas_get_corename(void);

namespace fp4kit::engine {

void set_blas_threads(int /*n*/) {
  // OpenBLAS always runs single-threaded; the engine parallelises over fixed tiles itself, so
  // every output element is computed by the same kernel path whatever the thread count.
  openblas_set_num_threads(1);
}

std::string blas_core_name() {
  const char* c = openblas_get_corename();
  return c ? c : "unknown";
}

std::string blas_coretype_override() {
  if (std::getenv("OPENBLAS_CORETYPE")) return {};  // the user's choice
  static const char* const kOld[] = {"Unknown", "Katmai", "Coppermine", "Northwood", "Prescott",
                                     "Banias", "Atom", "Core2", "Penryn", "Dunnington",
                                     "Nehalem"};
  const std::string core = blas_core_name();
  if (std::none_of(std::begin(kOld), std::end(kOld),
                   [&](const char* o) { return core == o; }))
    return {};
#if defined(__x86_64__) && defined(__GNUC__)
  // __builtin_cpu_supports checks the OS saves the registers too (XGETBV), as OpenBLAS does.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return {};
}

namespace {
// OpenBLAS runs single-threaded (set once, before the first product).
void blas_single_threaded() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

// The output tiles of a product: kTileCols columns (weight rows) by `rows` rows, the largest of
// 512, 256, 128, 64 rows that still gives kMinTiles tiles. Chosen from the shape only, never
// from the thread count: an element's value depends on its position inside its tile (OpenBLAS
// edge kernels round differently), so every thread count computes the same bytes. Tall tiles
// matter: each tile packs its kTileCols x k weights once, so rows per tile is the number of
// multiply-adds per packed weight.
constexpr size_t kTileCols = 256;
constexpr size_t kMinTiles = 32;
size_t tile_rows(size_t rows, size_t n) {
  const size_t tc = (n + kTileCols - 1) / kTileCols;
  size_t tr = 512;
  while (tr > 64 && ((rows + tr - 1) / tr) * tc < kMinTiles) tr /= 2;
  return tr;
}
}  // namespace

void matmul_nt(const float* x, size_t rows, size_t k, const float* w, size_t n, float* y,
               const float* bias) {
  if (rows == 0 || n == 0) return;
  blas_single_threaded();
  if (in_parallel_task()) {
    // One task of parallel_tasks (an expert): the whole product in one single-threaded sgemm,
    // so its weights are packed once for all rows (the parallelism is across tasks).
    if (k == 0) {
      std::fill(y, y + rows * n, 0.0f);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                  static_cast<int>(n), static_cast<int>(k), 1.0f, x, static_cast<int>(k), w,
                  static_cast<int>(k), 0.0f, y, static_cast<int>(n));
    }
    if (bias)
      for (size_t r = 0; r < rows; ++r)
        for (size_t j = 0; j < n; ++j) y[r * n + j] += bias[j];
    return;
  }
  const size_t kTileRows = tile_rows(rows, n);
  const size_t tr = (rows + kTileRows - 1) / kTileRows;
  const size_t tc = (n + kTileCols - 1) / kTileCols;
  parallel_for(0, tr * tc, 1, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) {
      const size_t r0 = (t / tc) * kTileRows, c0 = (t % tc) * kTileCols;
      const size_t nr = std::min(kTileRows, rows - r0), nc = std::min(kTileCols, n - c0);
      float* yt = y + r0 * n + c0;
      if (k == 0) {
        for (size_t r = 0; r < nr; ++r) std::fill(yt + r * n, yt + r * n + nc, 0.0f);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nr),
                    static_cast<int>(nc), static_cast<int>(k), 1.0f, x + r0 * k,
                    static_cast<int>(k), w + c0 * k, static_cast<int>(k), 0.0f, yt,
                    static_cast<int>(n));
      }
      if (bias)
        for (size_t r = 0; r < nr; ++r)
          for (size_t j = 0; j < nc; ++j) yt[r * n + j] += bias[c0 + j];
    }
  });
}

void rms_norm(const float* x, size_t rows, size_t dim, const float* weight, float eps, float* out,
              bool one_plus) {
  parallel_for(0, rows, 64, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* o = out + r * dim;
      // Accumulate in double: closer to the exact value than any float order, so the result
      // is within float rounding of transformers whatever order torch sums in.
      double ss = 0.0;
      for (size_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float var = static_cast<float>(ss / static_cast<double>(dim));
      const float inv = 1.0f / std::sqrt(var + eps);
      if (!weight) {
        for (size_t i = 0; i < dim; ++i) o[i] = xr[i] * inv;
      } else if (one_plus) {
        for (size_t i = 0; i < dim; ++i) o[i] = (1.0f + weight[i]) * (xr[i] * inv);
      } else {
        for (size_t i = 0; i < dim; ++i) o[i] = weight[i] * (xr[i] * inv);
      }
    }
  });
}

void silu_mul(float* gate, const float* up, size_t n) {
  parallel_for(0, n, 16384, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void add_inplace(float* dst, const float* src, size_t n) {
  parallel_for(0, n, 65536, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) dst[i] += src[i];
  });
}

void causal_attention(const float* q, size_t q_stride, const float* k, const float* v,
                      size_t kv_stride, size_t L, int nh, int nkv, int d, float scale, int window,
                      float* out, size_t out_stride, const float* sinks, int chunk, int dv,
                      size_t v_stride) {
  const int group = nh / nkv;
  if (dv <= 0) dv = d;
  if (v_stride == 0) v_stride = kv_stride;
  // First key of query i (window / chunk); never decreases with i.
  auto first_key = [&](size_t i) {
    size_t j0 = (window > 0 && i + 1 > static_cast<size_t>(window))
                    ? i + 1 - static_cast<size_t>(window)
                    : 0;
    if (chunk > 0) j0 = std::max(j0, i / static_cast<size_t>(chunk) * static_cast<size_t>(chunk));
    return j0;
  };
  // One task per (head, block of kQBlock queries), fixed whatever the thread count: scores
  // S = scale * Q K^T of the block's keys and O = P V are single-threaded sgemms (keys outside a
  // query's range get probability 0, which adds nothing).
  constexpr size_t kQBlock = 64;
  blas_single_threaded();
  const size_t nblocks = (L + kQBlock - 1) / kQBlock;
  parallel_for(0, static_cast<size_t>(nh) * nblocks, 1, [&](size_t t0, size_t t1) {
    std::vector<float> p;
    for (size_t t = t0; t < t1; ++t) {
      const int h = static_cast<int>(t / nblocks);
      const size_t b = t % nblocks;
      const int kvh = h / group;
      const size_t i0 = b * kQBlock, i1 = std::min(L, i0 + kQBlock), nq = i1 - i0;
      const size_t jlo = first_key(i0), nk = i1 - jlo;
      p.resize(nq * nk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq),
                  static_cast<int>(nk), d, scale, q + i0 * q_stride + static_cast<size_t>(h) * d,
                  static_cast<int>(q_stride), k + jlo * kv_stride + static_cast<size_t>(kvh) * d,
                  static_cast<int>(kv_stride), 0.0f, p.data(), static_cast<int>(nk));
      for (size_t i = i0; i < i1; ++i) {
        float* pr = p.data() + (i - i0) * nk;
        const size_t a = first_key(i) - jlo, e = i - jlo;  // keys [a, e] of the row
        float mx = -INFINITY;
        for (size_t j = a; j <= e; ++j) mx = std::max(mx, pr[j]);
        // transformers (gpt-oss eager): softmax over [scores, sink] less their max, sink dropped.
        const float sink = sinks ? sinks[h] : -INFINITY;
        if (sinks) mx = std::max(mx, sink);
        double sum = sinks ? static_cast<double>(std::exp(sink - mx)) : 0.0;
        for (size_t j = a; j <= e; ++j) {
          pr[j] = std::exp(pr[j] - mx);
          sum += pr[j];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (size_t j = 0; j < a; ++j) pr[j] = 0.0f;
        for (size_t j = a; j <= e; ++j) pr[j] *= inv;
        for (size_t j = e + 1; j < nk; ++j) pr[j] = 0.0f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nq), dv,
                  static_cast<int>(nk), 1.0f, p.data(), static_cast<int>(nk),
                  v + jlo * v_stride + static_cast<size_t>(kvh) * dv, static_cast<int>(v_stride),
                  0.0f, out + i0 * out_stride + static_cast<size_t>(h) * dv,
                  static_cast<int>(out_stride));
    }
  });
}

float llama4_attn_temperature(size_t position, float floor_scale, float attn_scale) {
  return std::log1p(std::floor((static_cast<float>(position) + 1.0f) / floor_scale)) * attn_scale +
         1.0f;
}

void silu_glu_split(const float* gate_up, size_t rows, size_t inter, float* out) {
  parallel_for(0, rows, 64, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* gu = gate_up + r * 2 * inter;
      float* o = out + r * inter;
      for (size_t i = 0; i < inter; ++i) {
        const float g = gu[i];
        o[i] = g / (1.0f + std::exp(-g)) * gu[inter + i];
      }
    }
  });
}

void clamped_swiglu_interleaved(const float* gate_up, size_t rows, size_t inter, float alpha,
                                float limit, float* out) {
  parallel_for(0, rows, 64, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* gu = gate_up + r * 2 * inter;
      float* o = out + r * inter;
      for (size_t i = 0; i < inter; ++i) {
        const float gate = std::min(gu[2 * i], limit);
        const float up = std::clamp(gu[2 * i + 1], -limit, limit);
        const float glu = gate * (1.0f / (1.0f + std::exp(-(gate * alpha))));
        o[i] = (up + 1.0f) * glu;
      }
    }
  });
}

void softmax_rows(float* x, size_t rows, size_t n) {
  parallel_for(0, rows, 64, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      float* v = x + r * n;
      const float mx = *std::max_element(v, v + n);
      float sum = 0.0f;
      for (size_t e = 0; e < n; ++e) sum += (v[e] = std::exp(v[e] - mx));
      for (size_t e = 0; e < n; ++e) v[e] /= sum;
    }
  });
}

namespace {

// One token of RouterKind::SigmoidGroupTopk (transformers' DeepseekV3TopkRouter, float32).
// p, idx: scratch of E entries.
void route_sigmoid_group(const float* lg, size_t E, const RouterOptions& opt,
                         std::vector<float>& p, std::vector<int32_t>& idx, int32_t* sel,
                         float* selw) {
  const size_t K = opt.top_k, G = opt.n_group, per = E / G;
  std::vector<float> choice(E);
  for (size_t e = 0; e < E; ++e) {
    p[e] = 1.0f / (1.0f + route_exp(-lg[e]));
    choice[e] = p[e] + (opt.selection_bias ? opt.selection_bias[e] : 0.0f);
  }
  if (G > 1) {
    // A group's score: the sum of its two largest choice scores (one when it holds one expert).
    std::vector<float> gs(G);
    std::vector<int32_t> gi(G);
    for (size_t g = 0; g < G; ++g) {
      float a = -INFINITY, b = -INFINITY;
      for (size_t e = g * per; e < (g + 1) * per; ++e) {
        if (choice[e] > a) {
          b = a;
          a = choice[e];
        } else if (choice[e] > b) {
          b = choice[e];
        }
      }
      gs[g] = per > 1 ? a + b : a;
      gi[g] = static_cast<int32_t>(g);
    }
    std::stable_sort(gi.begin(), gi.end(), [&](int32_t x, int32_t y) { return gs[x] > gs[y]; });
    std::vector<char> keep(G, 0);
    for (size_t j = 0; j < opt.topk_group && j < G; ++j) keep[static_cast<size_t>(gi[j])] = 1;
    for (size_t e = 0; e < E; ++e)
      if (!keep[e / per]) choice[e] = -INFINITY;
  }
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int32_t a, int32_t b) { return choice[a] > choice[b]; });
  float sum = 0.0f;
  for (size_t j = 0; j < K; ++j) sum += p[idx[j]];
  for (size_t j = 0; j < K; ++j) {
    sel[j] = idx[j];
    const float w = opt.norm_topk ? p[idx[j]] / (sum + 1e-20f) : p[idx[j]];
    selw[j] = w * opt.scaling;
  }
}

// RouterKind::SoftmaxGroupTopk's group stage (DeepseekV2TopkRouter, group_limited_greedy): a
// group of consecutive experts scores its largest probability; the probabilities outside the
// `keep` best groups become 0 (as transformers' masked_fill), so top-k picks inside them.
void limit_to_groups(std::vector<float>& p, size_t G, size_t keep_groups) {
  const size_t per = p.size() / G;
  std::vector<float> gs(G);
  std::vector<int32_t> gi(G);
  for (size_t g = 0; g < G; ++g) {
    gs[g] = *std::max_element(p.begin() + static_cast<std::ptrdiff_t>(g * per),
                              p.begin() + static_cast<std::ptrdiff_t>((g + 1) * per));
    gi[g] = static_cast<int32_t>(g);
  }
  std::stable_sort(gi.begin(), gi.end(), [&](int32_t x, int32_t y) { return gs[x] > gs[y]; });
  std::vector<char> keep(G, 0);
  for (size_t j = 0; j < keep_groups && j < G; ++j) keep[static_cast<size_t>(gi[j])] = 1;
  for (size_t e = 0; e < p.size(); ++e)
    if (!keep[e / per]) p[e] = 0.0f;
}

}  // namespace

Routes route_topk(const float* logits, size_t T, size_t E, const RouterOptions& opt) {
  const size_t K = opt.top_k;
  Routes r;
  r.tokens = T;
  r.k = K;
  r.expert.resize(T * K);
  r.weight.resize(T * K);
  parallel_for(0, T, 256, [&](size_t t0, size_t t1) {
    std::vector<float> p(E);
    std::vector<int32_t> idx(E);
    for (size_t t = t0; t < t1; ++t) {
      const float* lg = logits + t * E;
      int32_t* sel = r.expert.data() + t * K;
      float* selw = r.weight.data() + t * K;
      std::iota(idx.begin(), idx.end(), 0);
      if (opt.kind == RouterKind::SigmoidGroupTopk) {
        route_sigmoid_group(lg, E, opt, p, idx, sel, selw);
        continue;
      }
      if (opt.kind == RouterKind::TopkSigmoid || opt.kind == RouterKind::TopkSoftmax) {
        // torch.topk of the logits; ties keep the lower expert index.
        std::stable_sort(idx.begin(), idx.end(),
                         [&](int32_t a, int32_t b) { return lg[a] > lg[b]; });
        if (opt.kind == RouterKind::TopkSigmoid) {
          for (size_t j = 0; j < K; ++j) {
            sel[j] = idx[j];
            selw[j] = 1.0f / (1.0f + route_exp(-lg[idx[j]])) * opt.scaling;
          }
        } else {
          const float top = lg[idx[0]];
          float sum = 0.0f;
          for (size_t j = 0; j < K; ++j) sum += (p[j] = route_exp(lg[idx[j]] - top));
          for (size_t j = 0; j < K; ++j) {
            sel[j] = idx[j];
            selw[j] = p[j] / sum * opt.scaling;
          }
        }
        continue;
      }
      const float mx = *std::max_element(lg, lg + E);
      float sum = 0.0f;
      for (size_t e = 0; e < E; ++e) sum += (p[e] = route_exp(lg[e] - mx));
      for (size_t e = 0; e < E; ++e) p[e] /= sum;
      if (opt.kind == RouterKind::SoftmaxGroupTopk && opt.n_group > 1)
        limit_to_groups(p, opt.n_group, opt.topk_group);
      // Largest probability first; ties keep the lower expert index (torch.topk on CPU).
      std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
      float wsum = 0.0f;
      for (size_t j = 0; j < K; ++j) wsum += p[idx[j]];
      for (size_t j = 0; j < K; ++j) {
        sel[j] = idx[j];
        selw[j] = (opt.norm_topk ? p[idx[j]] / wsum : p[idx[j]]) * opt.scaling;
      }
    }
  });
  return r;
}

bool column_amax_sumsq(const float* x, size_t rows, size_t k, float* colmax, double* sumsq) {
  std::atomic<bool> bad{false};
  // Blocks of kCols columns accumulated in local arrays (no aliasing with x: the loops
  // vectorise); each column's sum is still added in row order.
  constexpr size_t kCols = 64;
  parallel_for(0, (k + kCols - 1) / kCols, 1, [&](size_t b0, size_t b1) {
    int local_bad = 0;
    for (size_t b = b0; b < b1; ++b) {
      const size_t c0 = b * kCols, nc = std::min(kCols, k - c0);
      float mx[kCols];
      double sq[kCols];
      std::copy_n(colmax + c0, nc, mx);
      std::copy_n(sumsq + c0, nc, sq);
      for (size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * k + c0;
        for (size_t c = 0; c < nc; ++c) {
          const float a = std::fabs(xr[c]);
          local_bad |= !(a <= std::numeric_limits<float>::max());  // NaN or Inf
          mx[c] = std::max(mx[c], a);
          sq[c] += static_cast<double>(xr[c]) * xr[c];
        }
      }
      std::copy_n(mx, nc, colmax + c0);
      std::copy_n(sq, nc, sumsq + c0);
    }
    if (local_bad) bad.store(true);
  });
  return !bad.load();
}

}  // namespace fp4kit::engine
