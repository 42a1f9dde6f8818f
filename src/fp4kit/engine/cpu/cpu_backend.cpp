// The CPU backend: host memory, the float32 kernels of cpu/ops.hpp (OpenBLAS sgemm on fixed tiles
// spread over the TBB pool, plain loops elsewhere).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <numeric>

#include "fp4kit/engine/act_quant.hpp"
#include "fp4kit/engine/backend.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/rope.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine {
namespace {

// Large buffers are kept for reuse when freed: the engine allocates the same shapes over and over
// (every expert's weights and activations), and fresh memory costs a page fault per page on
// first touch (expensive under sandboxed kernels, and serialised across threads). Sizes are
// rounded up to 1/8 of their power of two; at most kMaxCached bytes wait in the pool.
class BufferPool {
 public:
  static BufferPool& get() {
    static BufferPool* pool = new BufferPool;  // never destroyed: buffers may outlive statics
    return *pool;
  }
  static size_t size_class(size_t floats) {
    if (floats < kMinFloats) return floats;
    size_t p = 1;
    while (p * 2 <= floats) p *= 2;
    const size_t g = p / 8;
    return (floats + g - 1) / g * g;
  }
  std::shared_ptr<float[]> take(size_t floats) {
    const size_t n = size_class(floats);
    if (n < kMinFloats) return std::shared_ptr<float[]>(new float[n]);
    float* p = nullptr;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      const auto it = free_.find(n);
      if (it != free_.end()) {
        p = it->second;
        free_.erase(it);
        cached_ -= n;
      }
    }
    if (!p) p = new float[n];
    return std::shared_ptr<float[]>(p, [this, n](float* q) { give(q, n); });
  }

 private:
  static constexpr size_t kMinFloats = size_t(1) << 16;              // 256 KiB
  static constexpr size_t kMaxCached = (size_t(1) << 30) / sizeof(float);  // 1 GiB
  void give(float* p, size_t n) {
    {
      const std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + n <= kMaxCached) {
        free_.emplace(n, p);
        cached_ += n;
        return;
      }
    }
    delete[] p;
  }
  std::mutex mu_;
  std::multimap<size_t, float*> free_;
  size_t cached_ = 0;  // floats
};

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  bool concurrent_ops() const override { return true; }  // stateless but for linear()'s scratch

  // Uninitialised, as device memory is (no page-touching memset of every scratch buffer), and
  // reused from the pool where one of the same size class was freed.
  Buffer alloc(size_t bytes) override {
    std::shared_ptr<float[]> mem =
        BufferPool::get().take((bytes + sizeof(float) - 1) / sizeof(float));
    void* p = mem.get();
    return Buffer(std::move(mem), p, bytes);
  }
  void write(float* dst, const float* host, size_t n) override {
    std::memcpy(dst, host, n * sizeof(float));
  }
  Buffer upload(std::vector<float>&& host) override {
    auto mem = std::make_shared<std::vector<float>>(std::move(host));
    void* p = mem->data();
    const size_t bytes = mem->size() * sizeof(float);
    return Buffer(std::move(mem), p, bytes);
  }
  // Decoded straight into a buffer of this backend (no zero-filled vector first).
  Linear load_linear(const Checkpoint& ckpt, const LinearRef& ref, bool act) override {
    if (overlay_) return Backend::load_linear(ckpt, ref, act);  // weights from memory first
    Buffer w = alloc(ref.rows * ref.cols * sizeof(float));
    Linear L = Backend::upload(load_linear_into(ckpt, ref, act, w.f()));
    L.w = std::move(w);
    return L;
  }
  Linear load_linear_pair(const Checkpoint& ckpt, const LinearRef& a, const LinearRef& b,
                          bool act) override {
    if (overlay_ || a.cols != b.cols) return {};  // overlay: each through load_linear
    Buffer w = alloc((a.rows + b.rows) * a.cols * sizeof(float));
    LinearWeights la = load_linear_into(ckpt, a, act, w.f());
    const LinearWeights lb = load_linear_into(ckpt, b, act, w.f() + a.rows * a.cols);
    if (la.act_global_scale != lb.act_global_scale || !la.bias.empty() || !lb.bias.empty())
      return {};
    la.n = a.rows + b.rows;
    Linear L = Backend::upload(std::move(la));
    L.w = std::move(w);
    return L;
  }
  void download(const float* src, size_t n, float* host) const override {
    if (src != host) std::memmove(host, src, n * sizeof(float));
  }
  const float* host_view(const float* src, size_t) override { return src; }
  void copy(const float* src, size_t n, float* dst) override {
    if (src != dst) std::memmove(dst, src, n * sizeof(float));
  }
  void fill(float* x, size_t n, float value) override { std::fill(x, x + n, value); }
  void copy_strided(const float* src, size_t src_stride, size_t rows, size_t width, float* dst,
                    size_t dst_stride) override {
    parallel_for(0, rows, 64, [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; ++r) std::memmove(dst + r * dst_stride, src + r * src_stride,
                                                    width * sizeof(float));
    });
  }

  void gemm(const float* x, size_t rows, size_t k, const float* w, size_t n, float* y,
            const float* bias, bool /*exact: float32 always*/) override {
    matmul_nt(x, rows, k, w, n, y, bias);
  }
  void fake_quant_activations(float* x, size_t rows, size_t k, float gs) override {
    nvfp4_fake_quant_activations(x, rows, k, gs);
  }

  void rms_norm(const float* x, size_t rows, size_t dim, const float* weight, float eps,
                float* out, bool one_plus) override {
    engine::rms_norm(x, rows, dim, weight, eps, out, one_plus);
  }
  void add(float* dst, const float* src, size_t n) override { add_inplace(dst, src, n); }
  void add_rows_scaled(float* dst, const float* src, size_t rows, size_t width,
                       const float* s) override {
    parallel_for(0, rows, 16, [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; ++r) {
        const float f = s ? s[r] : 1.0f;
        for (size_t c = 0; c < width; ++c) dst[r * width + c] += f * src[r * width + c];
      }
    });
  }
  void scale(float* x, size_t n, float s) override {
    for (size_t i = 0; i < n; ++i) x[i] *= s;
  }
  void sigmoid(float* x, size_t n) override {
    for (size_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
  }
  void softmax(float* x, size_t rows, size_t n) override { softmax_rows(x, rows, n); }
  void mul_sigmoid(float* x, const float* gate, size_t n) override {
    for (size_t i = 0; i < n; ++i) x[i] *= 1.0f / (1.0f + std::exp(-gate[i]));
  }

  void causal_conv1d_silu(const float* x, size_t len, size_t channels, size_t stride,
                          const float* weight, size_t K, float* out) override {
    engine::causal_conv1d_silu(x, len, channels, stride, weight, K, out);
  }
  void gdn_gates(float* a, float* b, size_t rows, size_t heads, const float* A_log,
                 const float* dt_bias) override {
    engine::gdn_gates(a, b, rows, heads, A_log, dt_bias);
  }
  void gated_delta_rule(const float* q, const float* k, size_t qk_stride, const float* v,
                        size_t v_stride, const float* g, const float* beta, size_t len, int nk,
                        int nv, int dk, int dv, bool chunked, float* out) override {
    engine::gated_delta_rule(q, k, qk_stride, v, v_stride, g, beta, len, nk, nv, dk, dv, chunked,
                             out);
  }

  void silu_mul(float* gate, const float* up, size_t n) override { engine::silu_mul(gate, up, n); }
  void silu_glu_split(const float* gu, size_t rows, size_t inter, float* out) override {
    engine::silu_glu_split(gu, rows, inter, out);
  }
  void clamped_swiglu_interleaved(const float* gu, size_t rows, size_t inter, float alpha,
                                  float limit, float* out) override {
    engine::clamped_swiglu_interleaved(gu, rows, inter, alpha, limit, out);
  }

  void rope(float* x, size_t len, size_t stride, int heads, int head_dim, const Rope& r,
            RopeStyle style) override {
    parallel_for(0, len, 16, [&](size_t p0, size_t p1) {
      for (size_t p = p0; p < p1; ++p) {
        if (style == RopeStyle::Interleaved) r.apply_interleaved(x + p * stride, heads, head_dim, p);
        else r.apply(x + p * stride, heads, head_dim, p);
      }
    });
  }
  void attention_temperature(float* q, size_t len, size_t stride, size_t width, float floor_scale,
                             float attn_scale) override {
    for (size_t p = 0; p < len; ++p) {
      const float t = llama4_attn_temperature(p, floor_scale, attn_scale);
      for (size_t c = 0; c < width; ++c) q[p * stride + c] *= t;
    }
  }
  void attention(const float* q, size_t q_stride, const float* k, const float* v,
                 size_t kv_stride, size_t len, int nh, int nkv, int d, const AttentionOptions& o,
                 float* out, size_t out_stride) override {
    causal_attention(q, q_stride, k, v, kv_stride, len, nh, nkv, d, o.scale, o.window, out,
                     out_stride, o.sinks, o.chunk, o.v_dim, o.v_stride);
  }

  Routes route(const float* logits, size_t T, size_t E, const RouterOptions& o) override {
    return route_topk(logits, T, E, o);
  }
  void gather_rows(const float* src, size_t width, const uint32_t* rows, size_t n,
                   const float* s, float* dst) override {
    parallel_for(0, n, 16, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) {
        const float* a = src + static_cast<size_t>(rows[i]) * width;
        float* b = dst + i * width;
        if (s) {
          for (size_t c = 0; c < width; ++c) b[c] = a[c] * s[i];
        } else {
          std::copy_n(a, width, b);
        }
      }
    });
  }
  void scatter_add_rows(float* dst, size_t width, const uint32_t* rows, size_t n, const float* src,
                        const uint32_t* src_rows, const float* w) override {
    // Rows are distinct within one call: rows are written by one task each.
    parallel_for(0, n, 16, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) {
        const float f = w ? w[i] : 1.0f;
        const float* y = src + (src_rows ? static_cast<size_t>(src_rows[i]) : i) * width;
        float* o = dst + static_cast<size_t>(rows[i]) * width;
        for (size_t c = 0; c < width; ++c) o[c] += y[c] * f;
      }
    });
  }

  bool column_stats(const float* x, size_t rows, size_t k, float* colmax, double* sumsq) override {
    return column_amax_sumsq(x, rows, k, colmax, sumsq);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace fp4kit::engine
