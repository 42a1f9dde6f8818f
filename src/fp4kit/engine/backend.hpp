#pragma once
// The op interface the engine's blocks call, and the weight upload step. A backend owns its memory
// (host memory for cpu/, device memory for cuda/): blocks hold Buffers and pass raw float
// pointers INTO BACKEND MEMORY to every op, so a block runs unchanged on any backend. Host data
// enters through upload() and leaves through download() / host_view() (observers, logits).
// Routing stays in backend memory too: route_grouped gives each expert's tokens and weights as
// backend arrays (only the per-expert counts come to the host), and gather/scatter read them there.
//
// Every op is deterministic: the same inputs give the same bytes whatever the thread count.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fp4kit {
class Checkpoint;
}

namespace fp4kit::engine {

class Rope;
struct LinearWeights;
struct LinearRef;
struct BmmRef;

// Memory owned by a backend. Copies share the memory; the last one frees it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(std::shared_ptr<void> owner, void* ptr, size_t bytes)
      : owner_(std::move(owner)), ptr_(ptr), bytes_(bytes) {}
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  float* f() const { return as<float>(); }
  size_t bytes() const { return bytes_; }
  size_t floats() const { return bytes_ / sizeof(float); }
  bool empty() const { return bytes_ == 0; }

 private:
  std::shared_ptr<void> owner_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// One linear y = x W^T (+ b) in backend memory.
struct Linear {
  std::string module;  // the plan's module name (statistics are recorded under it)
  size_t n = 0, k = 0;
  Buffer w;     // [n, k] float32, row-major as checkpoints store it
  Buffer bias;  // empty or [n]
  // > 0: a W4A4 checkpoint; the input is NVFP4 quantize-dequantized with this global scale first
  // (see act_quant.hpp), as Blackwell kernels do.
  float act_global_scale = 0.0f;
  // Plain float32 products on every backend, never TF32/bf16 (routers: a near-tie between two
  // experts' logits must pick the CPU engine's expert).
  bool exact = false;
};

enum class RopeStyle {
  Half,         // rotate_half: pairs (i, i + rotary_dim / 2)
  Interleaved,  // Llama-4 complex form: pairs (2i, 2i + 1)
};

struct AttentionOptions {
  float scale = 1.0f;
  int window = 0;                // > 0: keys with i - j < window only (sliding window)
  int chunk = 0;                 // > 0: keys of the query's block of `chunk` positions only
  const float* sinks = nullptr;  // backend memory, one logit per query head (gpt-oss), or null
  // > 0: the value (and output) head size when it differs from the query/key head size d (MLA:
  // d = 192, v_dim = 128); value rows then have stride v_stride (0 = kv_stride) and output head
  // h starts at h * v_dim.
  int v_dim = 0;
  size_t v_stride = 0;
};

// How router logits become (expert, weight) pairs.
enum class RouterKind {
  SoftmaxTopk,  // softmax over all experts, top-k, optional renormalisation (Qwen-MoE, Mixtral)
  TopkSoftmax,  // top-k of the logits, softmax over those k (gpt-oss)
  TopkSigmoid,  // top-k of the logits, weight = sigmoid(logit) (Llama-4)
  // DeepSeek-V3 / GLM-4-MoE (noaux_tc): s = sigmoid(logit), c = s + selection_bias (selection
  // only); the experts form n_group groups of consecutive experts, a group scores the sum of its
  // two largest c, only the topk_group best groups compete; top-k of c among their experts;
  // weight = s, divided by (sum of the k weights + 1e-20) when norm_topk.
  SigmoidGroupTopk,
  // DeepSeek-V2 group_limited_greedy (DeepseekV2TopkRouter): p = softmax over all experts; a
  // group of E / n_group consecutive experts scores its largest p; only the topk_group best
  // groups compete; top-k of p among their experts; weight = p (renormalised when norm_topk).
  SoftmaxGroupTopk,
};

struct RouterOptions {
  RouterKind kind = RouterKind::SoftmaxTopk;
  size_t top_k = 1;
  bool norm_topk = false;  // SoftmaxTopk, Sigmoid/SoftmaxGroupTopk: renormalise the k weights
  // SigmoidGroupTopk: [experts] in backend memory (e_score_correction_bias), or null (zeros).
  const float* selection_bias = nullptr;
  // SigmoidGroupTopk, SoftmaxGroupTopk; n_group divides the expert count
  size_t n_group = 1, topk_group = 1;
  float scaling = 1.0f;  // every weight is multiplied by it last (routed_scaling_factor)
};

// The routing of T tokens, on the host: token t goes to expert[t * k + j] with weight[t * k + j].
// Ties between equal scores keep the lower expert index (torch.topk on CPU).
struct Routes {
  size_t tokens = 0, k = 0;
  std::vector<int32_t> expert;
  std::vector<float> weight;
};

// The routing of T tokens grouped by expert: entries [offset[e], offset[e + 1]) of `rows` are the
// tokens routed to expert e in increasing order and `weight` their routing weights (the same pairs
// as Routes). rows (uint32) and weight (float) are [tokens * k] in backend memory; offset is on the
// host ([experts + 1]).
struct ExpertGroups {
  size_t tokens = 0, k = 0;
  std::vector<size_t> offset;
  Buffer rows, weight;
  size_t count(size_t e) const { return offset[e + 1] - offset[e]; }
  const uint32_t* rows_of(size_t e) const { return rows.as<uint32_t>() + offset[e]; }
  const float* weight_of(size_t e) const { return weight.as<float>() + offset[e]; }
};

// Linears served from memory instead of the checkpoint (quantize --gptq-sequential runs a layer
// again with the weights it just quantized): Backend::load_linear asks it first; a backend that
// overrides load_linear hands the call to Backend::load_linear while an overlay is set.
class WeightOverlay {
 public:
  virtual ~WeightOverlay() = default;
  // True, with `out` filled, when `ref` is served from here.
  virtual bool find(const LinearRef& ref, bool activations, LinearWeights& out) const = 0;
};

class GroupMover;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // True when ops may be called from several host threads at once, each on its own buffers
  // (the CPU backend: blocks may then run independent work, e.g. experts, side by side). Such a
  // backend's memory is host memory (its Buffers may be read by the host directly).
  virtual bool concurrent_ops() const { return false; }

  // ---- memory and weights ----
  virtual Buffer alloc(size_t bytes) = 0;
  // `b` holds at least `floats` floats afterwards (contents undefined after a reallocation).
  void ensure(Buffer& b, size_t floats);
  // Host floats into backend memory (the CPU backend takes the vector over without a copy).
  virtual Buffer upload(std::vector<float>&& host) = 0;
  // The weight step: a decoded linear (weights.hpp) into backend memory.
  Linear upload(LinearWeights&& w);
  // The weight step from the checkpoint: weights.hpp's load_linear / load_bmm_expert, then
  // upload. A device backend may override them to move the stored bytes and decode on the device
  // (the same float32 values).
  virtual Linear load_linear(const Checkpoint& ckpt, const LinearRef& ref, bool activations);
  virtual Linear load_bmm_expert(const Checkpoint& ckpt, const BmmRef& ref, size_t expert,
                                 bool activations);
  // A hint: the next layer's blocks will load these checkpoint tensors. A device backend may start
  // moving their stored bytes now, while the current layer computes (the numbers never depend on
  // it). The CPU backend ignores it.
  virtual void prefetch(const Checkpoint& ckpt, const std::vector<std::string>& tensors) {}
  // Null (the default) or linears load_linear takes from `overlay` (it must outlive its use).
  void set_overlay(const WeightOverlay* overlay) { overlay_ = overlay; }
  // Two linears of the same input (gate and up) stacked into one [a.rows + b.rows, cols] linear,
  // a's rows first, so that one product reads the input once; or an empty Linear (w empty) when
  // the backend keeps them apart (the default) or they cannot share one product (widths,
  // activation scales or biases differ). The module name is a's.
  virtual Linear load_linear_pair(const Checkpoint& ckpt, const LinearRef& a, const LinearRef& b,
                                  bool activations);
  // Host 4-byte integers into backend memory (index arrays for gather/scatter).
  Buffer upload_u32(const std::vector<uint32_t>& host);
  // The rows `rows` of a loaded linear, in that order (bias rows follow), as a linear of the same
  // module: a fused projection split in backend memory (Qwen's q / gate, Qwen3-Next's grouped
  // qkvz / ba), so a device backend keeps its own decoding.
  Linear take_rows(const Linear& L, const std::vector<size_t>& rows);
  // n host floats into backend memory at dst (host may be reused as soon as it returns).
  virtual void write(float* dst, const float* host, size_t n) = 0;
  virtual void download(const float* src, size_t n, float* host) const = 0;
  // Host-held hidden states (ForwardPass::run_layer): the mover of groups of at most `floats`
  // floats between host memory and two windows of backend memory. The base moves each at once.
  virtual std::unique_ptr<GroupMover> group_mover(size_t floats);
  // Host-readable view of n floats at `src`, valid until the next host_view call (observers).
  // The CPU backend returns `src` itself.
  virtual const float* host_view(const float* src, size_t n) = 0;
  virtual void copy(const float* src, size_t n, float* dst) = 0;
  virtual void fill(float* x, size_t n, float value) = 0;
  // Strided 2-D copy: dst[r * dst_stride + c] = src[r * src_stride + c], r < rows, c < width
  // (columns of one buffer into another: MLA's latent, keys and values).
  virtual void copy_strided(const float* src, size_t src_stride, size_t rows, size_t width,
                            float* dst, size_t dst_stride) = 0;

  // ---- linear algebra ----
  // y[rows, n] = x[rows, k] * w[n, k]^T (+ bias[n]); bias may be null. exact: plain float32
  // products even where the backend otherwise uses faster, coarser math (TF32 on the GPU).
  virtual void gemm(const float* x, size_t rows, size_t k, const float* w, size_t n, float* y,
                    const float* bias, bool exact = false) = 0;
  // y = x W^T (+ b), x quantized first (into backend scratch, x untouched) for a W4A4 linear.
  void linear(const Linear& L, const float* x, size_t rows, float* y);
  // NVFP4 quantize-dequantize of the activation rows x [rows, k] in place (act_quant.hpp).
  virtual void fake_quant_activations(float* x, size_t rows, size_t k, float global_scale) = 0;

  // ---- elementwise and norms ----
  // out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * g per row of `dim`, g = weight, or 1 + weight
  // (`one_plus`, zero-centred norms), or 1 when weight is null. In place allowed.
  virtual void rms_norm(const float* x, size_t rows, size_t dim, const float* weight, float eps,
                        float* out, bool one_plus = false) = 0;
  virtual void add(float* dst, const float* src, size_t n) = 0;  // dst += src
  // dst[r, :] += scale[r] * src[r, :]; scale in backend memory, null = 1.
  virtual void add_rows_scaled(float* dst, const float* src, size_t rows, size_t width,
                               const float* scale) = 0;
  virtual void scale(float* x, size_t n, float s) = 0;      // x *= s
  virtual void mul_sigmoid(float* x, const float* gate, size_t n) = 0;  // x *= sigmoid(gate)
  virtual void sigmoid(float* x, size_t n) = 0;              // in place
  virtual void softmax(float* x, size_t rows, size_t n) = 0;  // per row, in place

  // ---- activations ----
  virtual void silu_mul(float* gate, const float* up, size_t n) = 0;  // gate = silu(gate) * up
  // gate_up [rows, 2I]: out = silu(first I) * (last I)  (Llama-4 BMM experts)
  virtual void silu_glu_split(const float* gate_up, size_t rows, size_t inter, float* out) = 0;
  // gate_up [rows, 2I] interleaved: gpt-oss's clamped SwiGLU (cpu/ops.hpp states the formula)
  virtual void clamped_swiglu_interleaved(const float* gate_up, size_t rows, size_t inter,
                                          float alpha, float limit, float* out) = 0;

  // ---- positions and attention (one sequence of `len` tokens, positions 0..len-1) ----
  virtual void rope(float* x, size_t len, size_t row_stride, int heads, int head_dim,
                    const Rope& rope, RopeStyle style) = 0;
  // Llama-4 NoPE layers: row p of q [len, width] *= log1p(floor((p + 1) / floor_scale)) *
  // attn_scale + 1.
  virtual void attention_temperature(float* q, size_t len, size_t row_stride, size_t width,
                                     float floor_scale, float attn_scale) = 0;
  // Causal grouped-query attention (cpu/ops.hpp: causal_attention states the semantics).
  virtual void attention(const float* q, size_t q_stride, const float* k, const float* v,
                         size_t kv_stride, size_t len, int nh, int nkv, int d,
                         const AttentionOptions& opt, float* out, size_t out_stride) = 0;

  // ---- linear attention (Gated DeltaNet), one sequence of `len` tokens ----
  // out[t, c] = silu(sum_j weight[c, j] * x[t - (K - 1) + j, c]) (depthwise causal convolution,
  // zero left padding, no bias); x [len, channels] with row stride `stride`, out [len, channels].
  virtual void causal_conv1d_silu(const float* x, size_t len, size_t channels, size_t stride,
                                  const float* weight, size_t K, float* out) = 0;
  // Per row and head: a <- -exp(A_log[h]) * softplus(a + dt_bias[h]) (the log decay g; softplus
  // is the identity above 20 as torch's), b <- sigmoid(b) (beta). a, b [rows, heads].
  virtual void gdn_gates(float* a, float* b, size_t rows, size_t heads, const float* A_log,
                         const float* dt_bias) = 0;
  // The gated delta rule: q, k [len, nk * dk] (row stride qk_stride), v [len, nv * dv] (row
  // stride v_stride), g, beta [len, nv]; out [len, nv * dv]. q and k are L2-normalised
  // (x / sqrt(sum x^2 + 1e-6)), q scaled by dk^-1/2; value head h reads key head h / (nv / nk).
  // Per head, from S = 0 [dk, dv]: S *= exp(g_t); S += k_t (x) (v_t - S^T k_t) beta_t;
  // o_t = S^T q_t. `chunked`: transformers' chunk-64 form (torch_chunk_gated_delta_rule), else
  // that recurrence token by token.
  virtual void gated_delta_rule(const float* q, const float* k, size_t qk_stride, const float* v,
                                size_t v_stride, const float* g, const float* beta, size_t len,
                                int nk, int nv, int dk, int dv, bool chunked, float* out) = 0;

  // ---- routing ----
  virtual Routes route(const float* logits, size_t tokens, size_t experts,
                       const RouterOptions& opt) = 0;
  // route's choices grouped by expert, in backend memory (the default: route, then grouped on
  // the host and uploaded; a device backend routes and groups on the device).
  virtual ExpertGroups route_grouped(const float* logits, size_t tokens, size_t experts,
                                     const RouterOptions& opt);
  // dst[i, :] = src[rows[i], :] * (scale ? scale[i] : 1); rows and scale in backend memory.
  virtual void gather_rows(const float* src, size_t width, const uint32_t* rows, size_t n,
                           const float* scale, float* dst) = 0;
  // dst[rows[i], :] += src[src_rows ? src_rows[i] : i, :] * (weight ? weight[i] : 1); arrays in
  // backend memory; `rows` are distinct within one call.
  virtual void scatter_add_rows(float* dst, size_t width, const uint32_t* rows, size_t n,
                                const float* src, const uint32_t* src_rows,
                                const float* weight) = 0;

  // ---- statistics ----
  // Per column of x [rows, k]: colmax[c] = max |x[:, c]|, sumsq[c] = sum x[:, c]^2 in double,
  // added in row order (host outputs). Returns false if x holds a NaN or Inf.
  virtual bool column_stats(const float* x, size_t rows, size_t k, float* colmax,
                            double* sumsq) = 0;
  // The same statistics kept in backend memory, without a wait per call (a device backend):
  // column_stats_add adds x's colmax (max) and sumsq (each column's column_stats sum added to the
  // slot's, in call order) into slot `slot`, remembering `call` when x holds a NaN or Inf;
  // column_stats_take brings every slot to the host at once (colmax[slot], sumsq[slot]: k values
  // each, empty for a slot not added to) and starts them over. It returns the smallest `call`
  // whose x held a NaN or Inf, or SIZE_MAX. A backend without them says false here.
  virtual bool defers_column_stats() const { return false; }
  virtual void column_stats_add(size_t slot, size_t call, const float* x, size_t rows, size_t k);
  virtual size_t column_stats_take(std::vector<std::vector<float>>& colmax,
                                   std::vector<std::vector<double>>& sumsq);

 protected:
  Buffer scratch_;  // linear(): the quantized copy of a W4A4 input
  const WeightOverlay* overlay_ = nullptr;
};

// Moves host-held groups through two windows of backend memory: upload(w, ...) starts writing a
// group's rows (host memory) into window w, enter(w) orders the compute after that upload and
// gives the window, download(w, ...) starts reading window w back into host memory after the
// compute queued so far, settle(w) waits until window w's download is in host memory, finish()
// settles both. The caller alternates the windows: group g+1 is uploaded into one while group g
// computes in the other, and settles a window before it reads the rows downloaded from it or
// downloads into it again. This base version does each transfer at once (Backend::write,
// Backend::download), so the bytes are the same whichever mover runs.
class GroupMover {
 public:
  GroupMover(Backend& be, size_t floats);
  virtual ~GroupMover() = default;
  GroupMover(const GroupMover&) = delete;
  GroupMover& operator=(const GroupMover&) = delete;
  virtual void upload(int w, const float* host, size_t n);
  virtual float* enter(int w) { return win_[w].f(); }
  virtual void download(int w, float* host, size_t n);
  virtual void settle(int w) {}
  void finish() {
    settle(0);
    settle(1);
  }

 protected:
  Backend& be_;
  Buffer win_[2];
};

// The CPU backend (cpu/cpu_backend.cpp); process-wide, stateless apart from scratch.
std::unique_ptr<Backend> make_cpu_backend();

}  // namespace fp4kit::engine
