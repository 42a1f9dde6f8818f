#include "fp4kit/engine/cuda/cuda_backend.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/cuda/decode_kernels.hpp"
#include "fp4kit/engine/cuda/device.hpp"
#include "fp4kit/engine/cuda/gdn_kernels.hpp"
#include "fp4kit/engine/cuda/kernels.hpp"
#include "fp4kit/engine/cuda/prefetch.hpp"
#include "fp4kit/engine/cuda/route.hpp"
#include "fp4kit/engine/model_spec.hpp"
#include "fp4kit/engine/profile.hpp"
#include "fp4kit/engine/rope.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine::cuda {
namespace {

// Host-held groups on the GPU (GroupMover): pinned staging, two buffers for uploads and two for
// downloads, filled and emptied on all cores; the copies run on a stream of their own, ordered
// against the compute stream by events: a window's upload before the compute that reads it, its
// download after the compute queued before it, and the next upload into it after that download.
class CudaGroupMover final : public GroupMover {
 public:
  CudaGroupMover(Backend& be, size_t floats, cudaStream_t compute)
      : GroupMover(be, floats), comp_(compute), cap_(std::max<size_t>(floats, 1)) {
    check(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaEventCreateWithFlags(&comp_done_, cudaEventDisableTiming), "event");
    for (int i = 0; i < 2; ++i) {
      check(cudaHostAlloc(&up_[i], cap_ * sizeof(float), cudaHostAllocDefault), "cudaHostAlloc");
      check(cudaHostAlloc(&down_[i], cap_ * sizeof(float), cudaHostAllocDefault),
            "cudaHostAlloc");
      check(cudaEventCreateWithFlags(&up_done_[i], cudaEventDisableTiming), "event");
      check(cudaEventCreateWithFlags(&down_done_[i], cudaEventDisableTiming), "event");
    }
    // the windows were allocated in the compute stream's order
    check(cudaEventRecord(comp_done_, comp_), "event");
    check(cudaStreamWaitEvent(copy_, comp_done_, 0), "event");
  }
  ~CudaGroupMover() override {
    cudaStreamSynchronize(copy_);
    for (int i = 0; i < 2; ++i) {
      cudaFreeHost(up_[i]);
      cudaFreeHost(down_[i]);
      cudaEventDestroy(up_done_[i]);
      cudaEventDestroy(down_done_[i]);
    }
    cudaEventDestroy(comp_done_);
    cudaStreamDestroy(copy_);
  }
  void upload(int w, const float* host, size_t n) override {
    if (n > cap_) throw Error("engine: a group larger than its window (internal error)");
    if (up_used_[w]) check(cudaEventSynchronize(up_done_[w]), "upload");  // staging free
    copy_floats(host, n, static_cast<float*>(up_[w]));
    check(cudaMemcpyAsync(win_[w].f(), up_[w], n * sizeof(float), cudaMemcpyHostToDevice, copy_),
          "upload");
    check(cudaEventRecord(up_done_[w], copy_), "event");
    up_used_[w] = true;
  }
  float* enter(int w) override {
    check(cudaStreamWaitEvent(comp_, up_done_[w], 0), "event");
    return win_[w].f();
  }
  void download(int w, float* host, size_t n) override {
    if (n > cap_) throw Error("engine: a group larger than its window (internal error)");
    settle(w);  // the staging buffer's last rows are out
    check(cudaEventRecord(comp_done_, comp_), "event");
    check(cudaStreamWaitEvent(copy_, comp_done_, 0), "event");
    check(cudaMemcpyAsync(down_[w], win_[w].f(), n * sizeof(float), cudaMemcpyDeviceToHost,
                          copy_),
          "download");
    check(cudaEventRecord(down_done_[w], copy_), "event");
    pending_[w] = host;
    pending_n_[w] = n;
  }
  void settle(int w) override {
    if (!pending_[w]) return;
    check(cudaEventSynchronize(down_done_[w]), "download");
    copy_floats(static_cast<const float*>(down_[w]), pending_n_[w], pending_[w]);
    pending_[w] = nullptr;
  }

 private:
  static void copy_floats(const float* src, size_t n, float* dst) {
    parallel_for(0, n, size_t(1) << 18, [&](size_t a, size_t b) {
      std::memcpy(dst + a, src + a, (b - a) * sizeof(float));
    });
  }
  cudaStream_t comp_, copy_ = nullptr;
  size_t cap_;
  void* up_[2] = {};
  void* down_[2] = {};
  cudaEvent_t up_done_[2] = {}, down_done_[2] = {}, comp_done_ = nullptr;
  bool up_used_[2] = {false, false};
  float* pending_[2] = {nullptr, nullptr};
  size_t pending_n_[2] = {0, 0};
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& o)
      : dev_(device_info(o.device)), ctx_(o.device, o.tf32 ? Math::Tf32 : Math::Fp32) {
    cudaMemPool_t pool;
    check(cudaDeviceGetDefaultMemPool(&pool, o.device), "cudaDeviceGetDefaultMemPool");
    uint64_t keep = UINT64_MAX;  // freed blocks stay in the pool: no device-wide syncs
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "mem pool");
    check(cudaMallocAsync(reinterpret_cast<void**>(&bad_), sizeof(int), s()), "cudaMallocAsync");
    check(cudaMemsetAsync(bad_, 0, sizeof(int), s()), "memset");
    // FP4KIT_ENGINE_PROFILE: each phase waits for the device, so its time is device time.
    if (profile::enabled()) profile::set_device_sync(+[] { cudaDeviceSynchronize(); });
    // FP4KIT_CUDA_PREFETCH=0 turns the cross-layer prefetch off (to measure what it gives).
    const char* pf = std::getenv("FP4KIT_CUDA_PREFETCH");
    if (!pf || std::string(pf) != "0")
      pre_ = std::make_unique<Prefetcher>(o.device, s(), ctx_.copy());
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(s());
    cudaFreeAsync(bad_, s());
    cudaStreamSynchronize(s());
    for (int i = 0; i < kRing; ++i) {
      if (pinned_done_[i]) cudaEventDestroy(pinned_done_[i]);
      if (pinned_[i]) cudaFreeHost(pinned_[i]);
    }
    if (stage_) cudaFreeHost(stage_);
  }

  const char* name() const override { return "cuda"; }

  void prefetch(const Checkpoint& c, const std::vector<std::string>& tensors) override {
    if (pre_) pre_->request(c, tensors);
  }

  Buffer alloc(size_t bytes) override {
    void* p = nullptr;
    if (bytes > 0) {
      const cudaError_t e = cudaMallocAsync(&p, bytes, s());
      if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        throw Error(fmt::format("GPU {} ({}): cannot allocate {:.2f} GiB ({}; {:.2f} of {:.2f} "
                                "GiB free)", dev_.index, dev_.name, bytes / 1073741824.0,
                                cudaGetErrorString(e), free_b / 1073741824.0,
                                total_b / 1073741824.0));
      }
    }
    cudaStream_t st = s();
    std::shared_ptr<void> owner(p, [st](void* q) {
      if (q) cudaFreeAsync(q, st);
    });
    return Buffer(std::move(owner), p, bytes);
  }

  Buffer upload(std::vector<float>&& host) override {
    Buffer b = alloc(host.size() * sizeof(float));
    // Pageable source: the call returns once the bytes are staged, so `host` may go away.
    check(cudaMemcpyAsync(b.f(), host.data(), b.bytes(), cudaMemcpyHostToDevice, s()), "upload");
    return b;
  }
  void write(float* dst, const float* host, size_t n) override {
    stage_bytes(reinterpret_cast<const uint8_t*>(host), n * sizeof(float),
                reinterpret_cast<uint8_t*>(dst));
  }
  void download(const float* src, size_t n, float* host) const override {
    if (n == 0) return;
    check(cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, s()), "download");
    check(cudaStreamSynchronize(s()), "download");
  }
  const float* host_view(const float* src, size_t n) override {
    view_.resize(n);
    download(src, n, view_.data());
    return view_.data();
  }
  void copy(const float* src, size_t n, float* dst) override {
    if (src == dst || n == 0) return;
    check(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, s()), "copy");
  }
  void fill(float* x, size_t n, float value) override { cuda::fill(x, n, value, s()); }
  void copy_strided(const float* src, size_t src_stride, size_t rows, size_t width, float* dst,
                    size_t dst_stride) override {
    if (rows == 0 || width == 0) return;
    check(cudaMemcpy2DAsync(dst, dst_stride * sizeof(float), src, src_stride * sizeof(float),
                            width * sizeof(float), rows, cudaMemcpyDeviceToDevice, s()),
          "copy_strided");
  }

  void gemm(const float* x, size_t rows, size_t k, const float* w, size_t n, float* y,
            const float* bias, bool exact) override {
    ctx_.gemm_nt(x, rows, k, w, n, y, false, exact);
    if (bias) add_bias(y, rows, n, bias, s());
  }
  void fake_quant_activations(float* x, size_t rows, size_t k, float gs) override {
    nvfp4_fake_quant(x, rows, k, gs, s());
  }

  void rms_norm(const float* x, size_t rows, size_t dim, const float* weight, float eps,
                float* out, bool one_plus) override {
    cuda::rms_norm(x, rows, dim, weight, one_plus ? 1.0f : 0.0f, eps, out, s());
  }
  void add(float* dst, const float* src, size_t n) override { add_inplace(dst, src, n, s()); }
  void add_rows_scaled(float* dst, const float* src, size_t rows, size_t width,
                       const float* f) override {
    cuda::add_rows_scaled(dst, src, rows, width, f, s());
  }
  void scale(float* x, size_t n, float f) override { cuda::scale(x, n, f, s()); }
  void sigmoid(float* x, size_t n) override { cuda::sigmoid(x, n, s()); }
  void mul_sigmoid(float* x, const float* gate, size_t n) override {
    cuda::mul_sigmoid(x, gate, n, s());
  }
  void softmax(float* x, size_t rows, size_t n) override { cuda::softmax_rows(x, rows, n, s()); }

  void silu_mul(float* gate, const float* up, size_t n) override {
    cuda::silu_mul(gate, up, n, s());
  }
  void silu_glu_split(const float* gu, size_t rows, size_t inter, float* out) override {
    cuda::silu_glu_split(gu, rows, inter, out, s());
  }
  void clamped_swiglu_interleaved(const float* gu, size_t rows, size_t inter, float alpha,
                                  float limit, float* out) override {
    cuda::clamped_swiglu_interleaved(gu, rows, inter, alpha, limit, out, s());
  }

  void rope(float* x, size_t len, size_t stride, int heads, int head_dim, const Rope& r,
            RopeStyle style) override {
    const Table& t = rope_table(r, style, head_dim, len);
    cuda::rope(x, len, stride, heads, head_dim, static_cast<int>(r.inv_freq().size()),
               positions(len), t.cs.data(), t.sn.data(), style == RopeStyle::Interleaved, s());
  }
  void attention_temperature(float* q, size_t len, size_t stride, size_t width, float floor_scale,
                             float attn_scale) override {
    auto key = std::make_tuple(floor_scale, attn_scale);
    auto& t = temps_[key];
    if (t.len < len) {
      std::vector<float> v(len);
      for (size_t p = 0; p < len; ++p) v[p] = llama4_attn_temperature(p, floor_scale, attn_scale);
      t.buf = upload(std::move(v));
      t.len = len;
    }
    scale_rows_by_position(q, len, stride, width, positions(len), t.buf.f(), s());
  }
  // Attention as products: scores = scale Q_h K_g^T of every head of a kv group in one batched
  // cuBLAS call (K shared: stride 0), probabilities by attention_softmax (causal mask, window,
  // chunk, sinks), then out_h = P_h V_g the same way, both in the context's math (TF32 by
  // default: statistics within the 0.1%, a near-tie route of a later MoE layer may move,
  // as with every other TF32 product; --gpu-fp32 keeps plain float32); heads in passes of at most 2^28 scores
  // (1 GiB). Sequences longer than 16384 (a head's scores alone above 1 GiB) use the kernel that
  // walks the keys per query.
  void attention(const float* q, size_t q_stride, const float* k, const float* v,
                 size_t kv_stride, size_t len, int nh, int nkv, int d, const AttentionOptions& o,
                 float* out, size_t out_stride) override {
    const size_t per_head = len * len, max_scores = size_t(1) << 28;
    if (len >= 2 && per_head <= max_scores && nkv > 0 && nh % nkv == 0) {
      const int dv = o.v_dim > 0 ? o.v_dim : d;
      const size_t vs = o.v_stride > 0 ? o.v_stride : kv_stride;
      const int G = nh / nkv, L = static_cast<int>(len);
      const int pass = static_cast<int>(std::min<size_t>(nh, max_scores / per_head));
      ensure(scores_, static_cast<size_t>(pass) * per_head);
      float* S = scores_.f();
      // Causal: query block [q0, q1) needs keys [0, q1) only, so long sequences go in nb blocks
      // of queries (4 blocks: 5/8 of the square's products and scores).
      const int nb = L >= 1024 ? 4 : L >= 512 ? 2 : 1;
      for (int h0 = 0; h0 < nh; h0 += pass) {
        const int h1 = std::min(nh, h0 + pass);
        for (int bq = 0; bq < nb; ++bq) {
          const int q0 = static_cast<int>(size_t(L) * bq / nb);
          const int q1 = static_cast<int>(size_t(L) * (bq + 1) / nb), nq = q1 - q0, nk = q1;
          const long long ph = static_cast<long long>(nq) * nk;
          for (int g = h0 / G; g * G < h1; ++g) {  // the kv groups with heads in [h0, h1)
            const int a = std::max(h0, g * G), b = std::min(h1, (g + 1) * G);
            ctx_.gemm_batched(true, false, nk, nq, d, o.scale, k + size_t(g) * d,
                              static_cast<int>(kv_stride), 0, q + size_t(q0) * q_stride + size_t(a) * d,
                              static_cast<int>(q_stride), d, S + size_t(a - h0) * ph, nk, ph, b - a);
          }
          attention_softmax(S, h1 - h0, nq, q0, nk, o.window, o.chunk, o.sinks, h0, s());
          for (int g = h0 / G; g * G < h1; ++g) {
            const int a = std::max(h0, g * G), b = std::min(h1, (g + 1) * G);
            ctx_.gemm_batched(false, false, dv, nq, nk, 1.0f, v + size_t(g) * dv,
                              static_cast<int>(vs), 0, S + size_t(a - h0) * ph, nk, ph,
                              out + size_t(q0) * out_stride + size_t(a) * dv,
                              static_cast<int>(out_stride), dv, b - a);
          }
        }
      }
      return;
    }
    causal_attention(q, q_stride, k, v, kv_stride, nullptr, 1, static_cast<int>(len), nh, nkv, d,
                     o.scale, o.window, o.chunk, o.sinks, out, out_stride, s(), o.v_dim,
                     o.v_stride);
  }

  // ---- Gated DeltaNet (gdn_kernels.hpp)
  void causal_conv1d_silu(const float* x, size_t len, size_t channels, size_t stride,
                          const float* weight, size_t K, float* out) override {
    cuda::causal_conv1d_silu(x, len, channels, stride, weight, K, out, s());
  }
  void gdn_gates(float* a, float* b, size_t rows, size_t heads, const float* A_log,
                 const float* dt_bias) override {
    cuda::gdn_gates(a, b, rows, heads, A_log, dt_bias, s());
  }
  void gated_delta_rule(const float* q, const float* k, size_t qk_stride, const float* v,
                        size_t v_stride, const float* g, const float* beta, size_t len, int nk,
                        int nv, int dk, int dv, bool chunked, float* out) override {
    ensure(gdn_scratch_, gated_delta_scratch_floats(len, nk, nv, dk, dv, chunked));
    cuda::gated_delta_rule(q, k, qk_stride, v, v_stride, g, beta, len, nk, nv, dk, dv, chunked,
                           out, gdn_scratch_.f(), s());
  }

  // ---- weights: the stored bytes moved (prefetched or staged) and decoded on the GPU to the
  // host decoding's floats (weights.hpp describes the storage; decode_kernels.hpp); float dtypes
  // other than BF16/F16/F32 decode on the host.
  Linear load_linear(const Checkpoint& c, const LinearRef& ref, bool act) override {
    if (overlay_) return Backend::load_linear(c, ref, act);  // weights from memory first
    const StoredLinear st = describe_linear(c, ref, act);
    Linear L;
    L.module = ref.module;
    L.n = ref.rows;
    L.k = ref.cols;
    L.act_global_scale = st.act_global_scale;
    L.w = alloc(L.n * L.k * sizeof(float));
    if (!decode_linear_here(c, st, L.n, L.k, L.w.f())) {
      std::vector<float> host(L.n * L.k);
      decode_linear(c, st, L.n, L.k, host.data());
      write(L.w.f(), host.data(), host.size());
    }
    if (!st.release.empty()) c.release(st.release);
    if (st.bias) L.bias = upload(load_vector(c, ref.module + ".bias", L.n));
    return L;
  }
  Linear load_bmm_expert(const Checkpoint& c, const BmmRef& ref, size_t e, bool act) override {
    const StoredBmmExpert st = describe_bmm_expert(c, ref, e, act);
    Linear L;
    L.module = ref.module;
    L.n = ref.n;
    L.k = ref.k;
    L.act_global_scale = st.act_global_scale;
    L.w = alloc(L.n * L.k * sizeof(float));
    if (!decode_bmm_here(c, st, L.n, L.k, L.w.f())) {
      std::vector<float> host(L.n * L.k);
      decode_bmm_expert(c, st, L.n, L.k, host.data());
      write(L.w.f(), host.data(), host.size());
    }
    std::vector<float> bias = load_bmm_expert_bias(c, ref, e);
    if (!bias.empty()) L.bias = upload(std::move(bias));
    return L;
  }

  // Routing on the device (route.hpp: the CPU engine's choices and weights bit for bit).
  Routes route(const float* logits, size_t T, size_t E, const RouterOptions& o) override {
    Routes r;
    r.tokens = T;
    r.k = o.top_k;
    r.expert.resize(T * o.top_k);
    r.weight.resize(T * o.top_k);
    if (T == 0) return r;
    Buffer de = alloc(r.expert.size() * 4), dw = alloc(r.weight.size() * 4);
    route_topk(logits, T, E, o, de.as<int32_t>(), dw.f(), s());
    check(cudaMemcpyAsync(r.expert.data(), de.as<void>(), de.bytes(), cudaMemcpyDeviceToHost, s()),
          "download");
    download(dw.f(), r.weight.size(), r.weight.data());
    return r;
  }
  // Routed and grouped on the device; only the E + 1 offsets come to the host.
  ExpertGroups route_grouped(const float* logits, size_t T, size_t E,
                             const RouterOptions& o) override {
    ExpertGroups g;
    g.tokens = T;
    g.k = o.top_k;
    g.offset.assign(E + 1, 0);
    if (T == 0) return g;
    const size_t n = T * o.top_k;
    Buffer de = alloc(n * 4), dw = alloc(n * 4);
    route_topk(logits, T, E, o, de.as<int32_t>(), dw.f(), s());
    g.rows = alloc(n * 4);
    g.weight = alloc(n * 4);
    Buffer scratch = alloc(std::max<size_t>(group_scratch_bytes(T, E), 4));
    Buffer off = alloc((E + 1) * sizeof(unsigned long long));
    group_by_expert(de.as<int32_t>(), dw.f(), T, o.top_k, E, scratch.as<void>(),
                    g.rows.as<uint32_t>(), g.weight.f(), off.as<unsigned long long>(), s());
    std::vector<unsigned long long> h(E + 1);
    check(cudaMemcpyAsync(h.data(), off.as<void>(), h.size() * sizeof(h[0]),
                          cudaMemcpyDeviceToHost, s()),
          "download");
    check(cudaStreamSynchronize(s()), "routing");
    for (size_t e = 0; e <= E; ++e) g.offset[e] = static_cast<size_t>(h[e]);
    return g;
  }
  void gather_rows(const float* src, size_t width, const uint32_t* rows, size_t n,
                   const float* sc, float* dst) override {
    gather_rows_u32(src, width, rows, n, sc, dst, s());
  }
  void scatter_add_rows(float* dst, size_t width, const uint32_t* rows, size_t n, const float* src,
                        const uint32_t* src_rows, const float* w) override {
    cuda::scatter_add_rows(dst, width, rows, n, src, src_rows, w, s());
  }

  bool column_stats(const float* x, size_t rows, size_t k, float* colmax, double* sumsq) override {
    const size_t scratch = column_stats_scratch_bytes(rows, k);
    if (stats_scratch_.bytes() < scratch) stats_scratch_ = alloc(scratch);
    if (stats_out_.bytes() < k * 12) stats_out_ = alloc(k * 12);
    double* dsum = stats_out_.as<double>();
    float* dmax = reinterpret_cast<float*>(dsum + k);
    cuda::column_stats(x, rows, k, stats_scratch_.as<void>(), dmax, dsum, bad_, s());
    int bad = 0;
    check(cudaMemcpyAsync(colmax, dmax, k * sizeof(float), cudaMemcpyDeviceToHost, s()), "stats");
    check(cudaMemcpyAsync(sumsq, dsum, k * sizeof(double), cudaMemcpyDeviceToHost, s()), "stats");
    check(cudaMemcpyAsync(&bad, bad_, sizeof(int), cudaMemcpyDeviceToHost, s()), "stats");
    check(cudaStreamSynchronize(s()), "stats");
    if (bad) check(cudaMemsetAsync(bad_, 0, sizeof(int), s()), "memset");
    return bad == 0;
  }

  std::unique_ptr<GroupMover> group_mover(size_t floats) override {
    return std::make_unique<CudaGroupMover>(*this, floats, s());
  }

  bool defers_column_stats() const override { return true; }
  void column_stats_add(size_t slot, size_t call, const float* x, size_t rows,
                        size_t k) override {
    if (!first_bad_.bytes()) {
      first_bad_ = alloc(sizeof(unsigned long long));
      check(cudaMemsetAsync(first_bad_.as<void>(), 0xff, sizeof(unsigned long long), s()),
            "memset");
    }
    if (slots_.size() <= slot) slots_.resize(slot + 1);
    StatSlot& sl = slots_[slot];
    if (sl.k != k) {  // a slot's sums start at 0 (and are reset to 0 by column_stats_take)
      sl.buf = alloc(k * 12);
      sl.k = k;
      check(cudaMemsetAsync(sl.buf.as<void>(), 0, k * 12, s()), "memset");
    }
    sl.used = true;
    const size_t scratch = column_stats_scratch_bytes(rows, k);
    if (stats_scratch_.bytes() < scratch) stats_scratch_ = alloc(scratch);
    double* dsum = sl.buf.as<double>();
    cuda::column_stats(x, rows, k, stats_scratch_.as<void>(), reinterpret_cast<float*>(dsum + k),
                       dsum, nullptr, s(), first_bad_.as<unsigned long long>(), call, true);
  }
  size_t column_stats_take(std::vector<std::vector<float>>& colmax,
                           std::vector<std::vector<double>>& sumsq) override {
    colmax.assign(slots_.size(), {});
    sumsq.assign(slots_.size(), {});
    if (!first_bad_.bytes()) return SIZE_MAX;
    size_t total = sizeof(unsigned long long);
    for (const StatSlot& sl : slots_)
      if (sl.used) total += sl.k * 12;
    if (stage_bytes_ < total) {
      if (stage_) check(cudaFreeHost(stage_), "cudaFreeHost");
      stage_ = nullptr;
      stage_bytes_ = 0;
      check(cudaHostAlloc(&stage_, total, cudaHostAllocDefault), "cudaHostAlloc");
      stage_bytes_ = total;
    }
    auto* h = static_cast<uint8_t*>(stage_);
    check(cudaMemcpyAsync(h, first_bad_.as<void>(), sizeof(unsigned long long),
                          cudaMemcpyDeviceToHost, s()),
          "stats");
    size_t at = sizeof(unsigned long long);
    for (const StatSlot& sl : slots_)
      if (sl.used) {
        check(cudaMemcpyAsync(h + at, sl.buf.as<void>(), sl.k * 12, cudaMemcpyDeviceToHost, s()),
              "stats");
        at += sl.k * 12;
      }
    check(cudaStreamSynchronize(s()), "stats");
    unsigned long long bad = 0;
    std::memcpy(&bad, h, sizeof(bad));
    at = sizeof(unsigned long long);
    for (size_t i = 0; i < slots_.size(); ++i) {
      StatSlot& sl = slots_[i];
      if (!sl.used) continue;
      const auto* d = reinterpret_cast<const double*>(h + at);
      const auto* f = reinterpret_cast<const float*>(d + sl.k);
      sumsq[i].assign(d, d + sl.k);
      colmax[i].assign(f, f + sl.k);
      at += sl.k * 12;
      check(cudaMemsetAsync(sl.buf.as<void>(), 0, sl.k * 12, s()), "memset");
      sl.used = false;
    }
    check(cudaMemsetAsync(first_bad_.as<void>(), 0xff, sizeof(unsigned long long), s()),
          "memset");
    return bad == ~0ull ? SIZE_MAX : static_cast<size_t>(bad);
  }

 private:
  cudaStream_t s() const { return ctx_.compute(); }

  // The device copy of `bytes` bytes of checkpoint tensor `name` from byte `offset`: the
  // prefetched tensor, or staged into `tmp` now (in stream order either way).
  const uint8_t* device_bytes(const Checkpoint& c, const std::string& name, size_t offset,
                              size_t bytes, Buffer& tmp) {
    if (pre_)
      if (const uint8_t* moved = pre_->acquire(c, name)) return moved + offset;
    tmp = alloc(bytes);
    stage_bytes(c.bytes(name).data() + offset, bytes, tmp.as<uint8_t>());
    return tmp.as<uint8_t>();
  }
  static bool widenable(DType t) { return t == DType::BF16 || t == DType::F16 || t == DType::F32; }
  static SrcType src_type(DType t) {
    return t == DType::BF16 ? SrcType::BF16 : t == DType::F16 ? SrcType::F16 : SrcType::F32;
  }
  unsigned long long* reset_bad_index() {
    if (bad_index_.empty()) bad_index_ = alloc(sizeof(unsigned long long));
    check(cudaMemsetAsync(bad_index_.as<void>(), 0xFF, sizeof(unsigned long long), s()), "memset");
    return bad_index_.as<unsigned long long>();
  }
  // The index a decode kernel flagged (waits for it), or kNoBadElement.
  unsigned long long bad_index() {
    unsigned long long i = kNoBadElement;
    check(cudaMemcpyAsync(&i, bad_index_.as<void>(), sizeof(i), cudaMemcpyDeviceToHost, s()),
          "download");
    check(cudaStreamSynchronize(s()), "decode check");
    return i;
  }

  // Decodes `st` into out [n, k] on the device; false when the host must (other float dtypes,
  // NVFP4 with k % 16 != 0, which the host decoding refuses with its message; INT4 / INT8
  // pack-quantized sources).
  bool decode_linear_here(const Checkpoint& c, const StoredLinear& st, size_t n, size_t k,
                          float* out) {
    Buffer a, b;
    switch (st.kind) {
      case StoredLinear::Kind::Float: {
        if (!widenable(st.dtype)) return false;
        const size_t bytes = n * k * dtype_size(st.dtype);
        if (const uint8_t* moved = pre_ ? pre_->acquire(c, st.tensor) : nullptr)
          to_f32(moved + st.offset, src_type(st.dtype), n * k, out, s());
        else if (st.dtype == DType::F32)
          stage_bytes(c.bytes(st.tensor).data() + st.offset, bytes, reinterpret_cast<uint8_t*>(out));
        else
          to_f32(device_bytes(c, st.tensor, st.offset, bytes, a), src_type(st.dtype), n * k, out,
                 s());
        return true;
      }
      case StoredLinear::Kind::Nvfp4:
      case StoredLinear::Kind::Nvfp4Div: {
        if (k % 16 != 0) return false;
        const uint8_t* codes = device_bytes(c, st.tensor, 0, n * (k / 2), a);
        const uint8_t* scales = device_bytes(c, st.scales, 0, n * (k / 16), b);
        nvfp4_decode(codes, k / 2, 1, scales, k / 16, 1, n, k, st.s2,
                     st.kind == StoredLinear::Kind::Nvfp4Div, out, s());
        return true;
      }
      case StoredLinear::Kind::Fp8Block: {
        const Fp8BlockScales& g = st.grid;
        const uint8_t* codes = device_bytes(c, st.tensor, 0, n * k, a);
        const uint8_t* grid = device_bytes(c, st.scales, 0, g.grid_rows * g.grid_cols *
                                           dtype_size(g.dtype), b);
        fp8_block_decode(codes, n, k, grid, g.dtype == DType::BF16, g.grid_cols, g.block_rows,
                         g.block_cols, out, reset_bad_index(), s());
        const unsigned long long bad = bad_index();
        if (bad != kNoBadElement) {
          const uint8_t code = c.bytes(st.tensor).data()[bad];
          throw Error(fmt::format("FP8 tensor '{}': NaN code {} at row {}, column {}", st.tensor,
                                  int(code), bad / k, bad % k));
        }
        return true;
      }
      case StoredLinear::Kind::PackedInt:
        return false;  // INT4 / INT8 pack-quantized: decoded on the host
    }
    return false;
  }
  bool decode_bmm_here(const Checkpoint& c, const StoredBmmExpert& st, size_t n, size_t k,
                       float* out) {
    Buffer a, b;
    switch (st.storage) {
      case BmmRef::Storage::Mxfp4: {
        const size_t groups = n * (k / kMxfp4Block);
        const uint8_t* blocks = device_bytes(c, st.tensor, st.offset, groups * 16, a);
        const uint8_t* scales = device_bytes(c, st.scales, st.scales_offset, groups, b);
        mxfp4_decode(blocks, scales, groups, out, reset_bad_index(), s());
        const unsigned long long bad = bad_index();
        if (bad != kNoBadElement)
          throw Error(fmt::format("MXFP4 scale tensor '{}': block {} has the NaN scale 0xFF",
                                  st.scales, bad));
        return true;
      }
      case BmmRef::Storage::Float: {
        if (!widenable(st.dtype)) return false;
        const uint8_t* src = device_bytes(c, st.tensor, st.offset, k * n * dtype_size(st.dtype), a);
        to_f32_transposed(src, src_type(st.dtype), k, n, out, s());
        return true;
      }
      case BmmRef::Storage::Nvfp4: {
        if (k % 16 != 0) return false;
        const uint8_t* codes = device_bytes(c, st.tensor, st.offset, (k / 2) * n, a);
        const uint8_t* scales = device_bytes(c, st.scales, st.scales_offset, (k / 16) * n, b);
        nvfp4_decode(codes, 1, n, scales, 1, n, n, k, st.s2, false, out, s());
        return true;
      }
    }
    return false;
  }

  // Host bytes (the mmap'd checkpoint) to the device through a ring of pinned chunks, copied in
  // by all cores while earlier chunks travel; in stream order with the kernels.
  void stage_bytes(const uint8_t* src, size_t bytes, uint8_t* dst) {
    constexpr size_t kChunk = size_t(32) << 20;
    if (!pinned_[0]) {
      for (int i = 0; i < kRing; ++i) {
        check(cudaHostAlloc(&pinned_[i], kChunk, cudaHostAllocDefault), "cudaHostAlloc");
        check(cudaEventCreateWithFlags(&pinned_done_[i], cudaEventDisableTiming), "event");
      }
    }
    for (size_t off = 0; off < bytes; off += kChunk) {
      const size_t len = std::min(kChunk, bytes - off);
      const int i = ring_next_;
      ring_next_ = (ring_next_ + 1) % kRing;
      check(cudaEventSynchronize(pinned_done_[i]), "staging");
      uint8_t* buf = static_cast<uint8_t*>(pinned_[i]);
      parallel_copy(buf, src + off, len);
      check(cudaMemcpyAsync(dst + off, buf, len, cudaMemcpyHostToDevice, s()), "upload");
      check(cudaEventRecord(pinned_done_[i], s()), "event");
    }
  }

  struct Table {
    std::vector<float> inv;
    float scaling = 0.0f;
    size_t len = 0;
    Buffer cs_buf, sn_buf;
    struct View {
      const Buffer* b;
      const float* data() const { return b->f(); }
    };
    View cs{&cs_buf}, sn{&sn_buf};
  };

  // cos/sin [len, rotary_dim / 2] of the CPU engine's Rope: its rotation of (1, 0) pairs.
  const Table& rope_table(const Rope& r, RopeStyle style, int hd, size_t len) {
    auto key = std::make_tuple(static_cast<int>(style), hd, r.inv_freq(), r.attention_scaling());
    Table& t = ropes_[key];
    if (t.len >= len) return t;
    const size_t half = r.inv_freq().size();  // rotary_dim / 2 (partial rotary: < head_dim / 2)
    if (2 * half > static_cast<size_t>(hd))
      throw Error(fmt::format("CUDA RoPE: rotary_dim {} exceeds head_dim {}", 2 * half, hd));
    std::vector<float> cs(len * half), sn(len * half), x(static_cast<size_t>(hd));
    for (size_t p = 0; p < len; ++p) {
      std::fill(x.begin(), x.end(), 0.0f);
      if (style == RopeStyle::Interleaved) {
        for (size_t i = 0; i < half; ++i) x[2 * i] = 1.0f;
        r.apply_interleaved(x.data(), 1, hd, p);
        for (size_t i = 0; i < half; ++i) cs[p * half + i] = x[2 * i], sn[p * half + i] = x[2 * i + 1];
      } else {
        for (size_t i = 0; i < half; ++i) x[i] = 1.0f;
        r.apply(x.data(), 1, hd, p);
        for (size_t i = 0; i < half; ++i) cs[p * half + i] = x[i], sn[p * half + i] = x[half + i];
      }
    }
    t.cs_buf = upload(std::move(cs));
    t.sn_buf = upload(std::move(sn));
    t.cs = {&t.cs_buf};
    t.sn = {&t.sn_buf};
    t.len = len;
    return t;
  }

  const int32_t* positions(size_t len) {
    if (pos_len_ < len) {
      std::vector<int32_t> p(len);
      for (size_t i = 0; i < len; ++i) p[i] = static_cast<int32_t>(i);
      pos_ = alloc(len * sizeof(int32_t));
      check(cudaMemcpyAsync(pos_.as<void>(), p.data(), len * 4, cudaMemcpyHostToDevice, s()),
            "upload");
      check(cudaStreamSynchronize(s()), "upload");
      pos_len_ = len;
    }
    return pos_.as<int32_t>();
  }

  static constexpr int kRing = 4;
  void* pinned_[kRing] = {};
  cudaEvent_t pinned_done_[kRing] = {};
  int ring_next_ = 0;
  DeviceInfo dev_;
  Context ctx_;
  int* bad_ = nullptr;
  std::vector<float> view_;
  Buffer stats_scratch_, stats_out_, pos_, scores_, gdn_scratch_, bad_index_;
  // Column statistics kept on the GPU (column_stats_add): per slot [k doubles][k floats], and
  // the first call that saw a NaN/Inf; stage_: pinned host memory they come back through.
  struct StatSlot {
    Buffer buf;
    size_t k = 0;
    bool used = false;
  };
  std::vector<StatSlot> slots_;
  Buffer first_bad_;
  void* stage_ = nullptr;
  size_t stage_bytes_ = 0;
  size_t pos_len_ = 0;
  std::map<std::tuple<int, int, std::vector<float>, float>, Table> ropes_;
  struct Temp {
    Buffer buf;
    size_t len = 0;
  };
  std::map<std::tuple<float, float>, Temp> temps_;
  std::unique_ptr<Prefetcher> pre_;  // null: FP4KIT_CUDA_PREFETCH=0; destroyed first
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options) {
  return std::make_unique<CudaBackend>(options);
}

}  // namespace fp4kit::engine::cuda
