// Routing kernels (see route.hpp). One warp per token: the lanes compute the per-expert scores
// in parallel; the sums are added by one lane in expert order and top-k is k rounds of a warp
// arg-max (greater value, or equal value and lower index), which picks what a stable sort by
// descending score picks, as route_topk does.
#include "fp4kit/engine/cuda/route.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "fp4kit/engine/route_exp.hpp"
#include "fp4kit/engine/cuda/device.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine::cuda {
namespace {

struct RouteArgs {
  int kind;  // RouterKind
  int k;
  int norm;
  const float* bias;
  int groups, topk_group;
  float scaling;
};

// The arg-max over key[e] of the lane-owned experts e = lane + 32 i not yet taken (bit i of
// `taken`); ties to the lower index. Every lane returns the same expert; its owner marks it taken.
__device__ int warp_argmax(const float* key, int E, unsigned& taken, int lane) {
  int be = -1;
  float bv = 0.0f;
  for (int i = 0, e = lane; e < E; ++i, e += 32) {
    if ((taken >> i) & 1u) continue;
    const float v = key[e];
    if (be < 0 || v > bv) be = e, bv = v;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const int oe = __shfl_xor_sync(0xffffffffu, be, o);
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    if (oe >= 0 && (be < 0 || ov > bv || (ov == bv && oe < be))) be = oe, bv = ov;
  }
  if (be >= 0 && (be & 31) == lane) taken |= 1u << (be >> 5);
  return be;
}

// Groups of `per` consecutive experts scored gs[g]; keeps the topk_group best (ties: lower group)
// and sets key[e] = masked for the experts of the others. Lane 0 only; the caller syncs the warp.
// A kept group's score becomes NaN (never chosen again); scores are finite or infinite, never NaN,
// for finite logits.
__device__ void keep_best_groups(float* gs, int G, int keep, float* key, int per, float masked) {
  for (int j = 0; j < keep && j < G; ++j) {
    int b = -1;
    for (int g = 0; g < G; ++g)
      if (!isnan(gs[g]) && (b < 0 || gs[g] > gs[b])) b = g;
    if (b >= 0) gs[b] = NAN;
  }
  for (int e = 0; e < G * per; ++e)
    if (!isnan(gs[e / per])) key[e] = masked;
}

// se[j] (lane 0 writes) = the k experts of the largest key[e], largest first, ties to the lower
// index (a stable sort's first k); the warp is synced on return.
__device__ void select_topk(const float* key, int E, int k, int lane, int32_t* se) {
  unsigned taken = 0;
  for (int j = 0; j < k; ++j) {
    const int b = warp_argmax(key, E, taken, lane);
    if (lane == 0) se[j] = b;
  }
  __syncwarp();
}

__global__ void route_kernel(const float* logits, int T, int E, RouteArgs a, int32_t* out_e,
                             float* out_w) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  float* v = smem + size_t(warp) * 3 * E;  // scores (p)
  float* c = v + E;                        // selection keys (choice)
  float* gs = c + E;                       // group scores
  const RouterKind kind = static_cast<RouterKind>(a.kind);
  for (int t = blockIdx.x * warps + warp; t < T; t += gridDim.x * warps) {
    const float* lg = logits + size_t(t) * E;
    int32_t* se = out_e + size_t(t) * a.k;
    float* sw = out_w + size_t(t) * a.k;
    if (kind == RouterKind::TopkSigmoid || kind == RouterKind::TopkSoftmax) {
      for (int e = lane; e < E; e += 32) v[e] = lg[e];
      __syncwarp();
      select_topk(v, E, a.k, lane, se);
      if (lane == 0) {
        if (kind == RouterKind::TopkSigmoid) {
          for (int j = 0; j < a.k; ++j)
            sw[j] = 1.0f / (1.0f + route_exp(-v[se[j]])) * a.scaling;
        } else {
          const float top = v[se[0]];
          float sum = 0.0f;
          for (int j = 0; j < a.k; ++j) sum += route_exp(v[se[j]] - top);
          for (int j = 0; j < a.k; ++j) sw[j] = route_exp(v[se[j]] - top) / sum * a.scaling;
        }
      }
      __syncwarp();
      continue;
    }
    if (kind == RouterKind::SigmoidGroupTopk) {
      for (int e = lane; e < E; e += 32) {
        v[e] = 1.0f / (1.0f + route_exp(-lg[e]));
        c[e] = v[e] + (a.bias ? a.bias[e] : 0.0f);
      }
      __syncwarp();
      if (a.groups > 1 && lane == 0) {
        const int per = E / a.groups;
        for (int g = 0; g < a.groups; ++g) {
          float x = -INFINITY, y = -INFINITY;
          for (int e = g * per; e < (g + 1) * per; ++e) {
            if (c[e] > x) {
              y = x;
              x = c[e];
            } else if (c[e] > y) {
              y = c[e];
            }
          }
          gs[g] = per > 1 ? x + y : x;
        }
        keep_best_groups(gs, a.groups, a.topk_group, c, per, -INFINITY);
      }
      __syncwarp();
      select_topk(c, E, a.k, lane, se);
      if (lane == 0) {
        float sum = 0.0f;
        for (int j = 0; j < a.k; ++j) sum += v[se[j]];
        for (int j = 0; j < a.k; ++j) {
          const float w = a.norm ? v[se[j]] / (sum + 1e-20f) : v[se[j]];
          sw[j] = w * a.scaling;
        }
      }
      __syncwarp();
      continue;
    }
    // SoftmaxTopk, SoftmaxGroupTopk: softmax over all experts first.
    float mx = -INFINITY;
    for (int e = lane; e < E; e += 32) mx = fmaxf(mx, lg[e]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    for (int e = lane; e < E; e += 32) v[e] = route_exp(lg[e] - mx);
    __syncwarp();
    float sum = 0.0f;
    if (lane == 0)
      for (int e = 0; e < E; ++e) sum += v[e];
    sum = __shfl_sync(0xffffffffu, sum, 0);
    for (int e = lane; e < E; e += 32) v[e] /= sum;
    __syncwarp();
    if (kind == RouterKind::SoftmaxGroupTopk && a.groups > 1 && lane == 0) {
      const int per = E / a.groups;
      for (int g = 0; g < a.groups; ++g) {
        float x = v[g * per];
        for (int e = g * per + 1; e < (g + 1) * per; ++e) x = v[e] > x ? v[e] : x;
        gs[g] = x;
      }
      keep_best_groups(gs, a.groups, a.topk_group, v, per, 0.0f);
    }
    __syncwarp();
    select_topk(v, E, a.k, lane, se);
    if (lane == 0) {
      float wsum = 0.0f;
      for (int j = 0; j < a.k; ++j) wsum += v[se[j]];
      for (int j = 0; j < a.k; ++j) sw[j] = (a.norm ? v[se[j]] / wsum : v[se[j]]) * a.scaling;
    }
    __syncwarp();
  }
}

constexpr int kTile = 1024;  // tokens per tile of the grouping

// counts[tile * E + e]: entries of expert e among the tile's tokens.
__global__ void tile_count_kernel(const int32_t* expert, int T, int k, int E, unsigned* counts) {
  extern __shared__ unsigned hist[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  const size_t i0 = size_t(blockIdx.x) * kTile * k;
  const size_t i1 = min(size_t(T), size_t(blockIdx.x + 1) * kTile) * k;
  for (size_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) atomicAdd(&hist[expert[i]], 1u);
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) counts[size_t(blockIdx.x) * E + e] = hist[e];
}

// counts become each tile's first position per expert; offset[e] each expert's first position.
__global__ void tile_scan_kernel(unsigned* counts, int tiles, int E, unsigned long long* offset) {
  __shared__ unsigned long long total[1024];
  const int e = threadIdx.x;
  unsigned long long run = 0;
  if (e < E) {
    for (int t = 0; t < tiles; ++t) {
      const unsigned n = counts[size_t(t) * E + e];
      counts[size_t(t) * E + e] = static_cast<unsigned>(run);
      run += n;
    }
    total[e] = run;
  }
  __syncthreads();
  if (e == 0) {
    unsigned long long o = 0;
    for (int x = 0; x < E; ++x) {
      offset[x] = o;
      const unsigned long long n = total[x];
      total[x] = o;
      o += n;
    }
    offset[E] = o;
  }
  __syncthreads();
  if (e < E)
    for (int t = 0; t < tiles; ++t) counts[size_t(t) * E + e] += static_cast<unsigned>(total[e]);
}

// One warp per tile, 32 tokens at a time: a token's rank among the 32 for expert e is the number
// of lower lanes routed to e (a bit mask per expert), so each expert's rows stay in token order.
__global__ void tile_place_kernel(const int32_t* expert, const float* weight, int T, int k, int E,
                                  const unsigned* base, uint32_t* rows, float* wout) {
  extern __shared__ unsigned sh[];
  unsigned* mask = sh;
  unsigned* cursor = sh + E;
  const int lane = threadIdx.x;
  for (int e = lane; e < E; e += 32) {
    mask[e] = 0;
    cursor[e] = base[size_t(blockIdx.x) * E + e];
  }
  __syncwarp();
  const int t_end = min(T, (blockIdx.x + 1) * kTile);
  for (int t0 = blockIdx.x * kTile; t0 < t_end; t0 += 32) {
    const int t = t0 + lane;
    const bool on = t < t_end;
    if (on)
      for (int j = 0; j < k; ++j) atomicOr(&mask[expert[size_t(t) * k + j]], 1u << lane);
    __syncwarp();
    if (on)
      for (int j = 0; j < k; ++j) {
        const size_t i = size_t(t) * k + j;
        const int e = expert[i];
        const unsigned pos = cursor[e] + __popc(mask[e] & ((1u << lane) - 1u));
        rows[pos] = static_cast<uint32_t>(t);
        wout[pos] = weight[i];
      }
    __syncwarp();
    if (on)
      for (int j = 0; j < k; ++j) {
        const int e = expert[size_t(t) * k + j];
        const unsigned m = mask[e];
        if (m != 0 && __ffs(m) - 1 == lane) {
          cursor[e] += __popc(m);
          mask[e] = 0;
        }
      }
    __syncwarp();
  }
}

}  // namespace

void route_topk(const float* logits, size_t T, size_t E, const RouterOptions& o, int32_t* expert,
                float* weight, cudaStream_t s) {
  if (T == 0) return;
  if (E == 0 || E > 1024 || o.top_k == 0 || o.top_k > E)
    throw Error("CUDA routing: " + std::to_string(E) + " experts, top-" +
                std::to_string(o.top_k) + " (1 <= top-k <= experts <= 1024)");
  const bool grouped = o.kind == RouterKind::SigmoidGroupTopk || o.kind == RouterKind::SoftmaxGroupTopk;
  if (grouped && (o.n_group == 0 || E % o.n_group != 0))
    throw Error("CUDA routing: " + std::to_string(E) + " experts in " + std::to_string(o.n_group) +
                " groups");
  RouteArgs a{static_cast<int>(o.kind), static_cast<int>(o.top_k), o.norm_topk ? 1 : 0,
              o.selection_bias, grouped ? static_cast<int>(o.n_group) : 1,
              static_cast<int>(o.topk_group), o.scaling};
  const size_t per_warp = 3 * E * sizeof(float);
  const int warps = static_cast<int>(std::max<size_t>(1, std::min<size_t>(4, 49152 / per_warp)));
  const size_t blocks = std::min<size_t>((T + warps - 1) / warps, 65536);
  route_kernel<<<static_cast<unsigned>(blocks), 32 * warps, warps * per_warp, s>>>(
      logits, static_cast<int>(T), static_cast<int>(E), a, expert, weight);
  check_launch("route_topk");
}

size_t group_scratch_bytes(size_t T, size_t E) {
  return ((T + kTile - 1) / kTile) * E * sizeof(unsigned);
}

void group_by_expert(const int32_t* expert, const float* weight, size_t T, size_t k, size_t E,
                     void* scratch, uint32_t* rows, float* wout, unsigned long long* offset,
                     cudaStream_t s) {
  if (E == 0 || E > 1024) throw Error("CUDA expert grouping: at most 1024 experts");
  if (T * k >= (size_t(1) << 32))
    throw Error("CUDA expert grouping: " + std::to_string(T) + " tokens x top-" +
                std::to_string(k) + " routes in one call (below 2^32)");
  const size_t tiles = (T + kTile - 1) / kTile;
  auto* counts = static_cast<unsigned*>(scratch);
  if (tiles > 0) {
    tile_count_kernel<<<static_cast<unsigned>(tiles), 256, E * sizeof(unsigned), s>>>(
        expert, static_cast<int>(T), static_cast<int>(k), static_cast<int>(E), counts);
    check_launch("group_by_expert (count)");
  }
  tile_scan_kernel<<<1, 1024, 0, s>>>(counts, static_cast<int>(tiles), static_cast<int>(E), offset);
  check_launch("group_by_expert (scan)");
  if (tiles > 0) {
    tile_place_kernel<<<static_cast<unsigned>(tiles), 32, 2 * E * sizeof(unsigned), s>>>(
        expert, weight, static_cast<int>(T), static_cast<int>(k), static_cast<int>(E), counts,
        rows, wout);
    check_launch("group_by_expert (place)");
  }
}

}  // namespace fp4kit::engine::cuda
