// The GPU forward pass (see cuda_engine.hpp). One compute thread enqueues each layer's kernels on
// the compute stream; a loader thread prepares layer l + 1 (CPU decoding where the storage needs
// it, copies through a ring of pinned chunks) and uploads it on the copy stream into the other
// device weight buffer. Events order the two: layer l waits for its upload; the upload of layer
// l + 2 waits for layer l's kernels, which read the same buffer.
#include "fp4kit/engine/cuda/cuda_engine.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/cuda/device.hpp"
#include "fp4kit/engine/cuda/kernels.hpp"
#include "fp4kit/engine/rope.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine::cuda {
namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

size_t elem_size(SrcType t) { return t == SrcType::F32 ? 4 : 2; }

bool raw_type(DType d, SrcType* out) {
  switch (d) {
    case DType::F32: *out = SrcType::F32; return true;
    case DType::BF16: *out = SrcType::BF16; return true;
    case DType::F16: *out = SrcType::F16; return true;
    default: return false;
  }
}

// One weight as it travels to the GPU: raw bytes of the mmap'd checkpoint (BF16/F16/F32, widened
// on the GPU) or float32 decoded on the CPU by `decode` (run by the loader thread).
struct Weight {
  std::string module;
  size_t n = 0, k = 1;       // linear [n, k]; a vector has k = 1
  SrcType type = SrcType::F32;
  bool kn = false;           // stored [k, n] (BMM float experts)
  const uint8_t* raw = nullptr;
  std::string release;       // whole tensor to release from the page cache once copied
  std::function<void(Weight&)> decode;  // fills host (+ bias, act_gs)
  bool may_have_bias = false;
  std::vector<float> host, bias;
  float act_gs = 0.0f;
  // placement in the layer's device buffer
  size_t offset = 0, bias_offset = 0;
  const uint8_t* dev = nullptr;
  bool present() const { return n > 0; }
  size_t bytes() const { return raw ? n * k * elem_size(type) : n * k * sizeof(float); }
  size_t widened_bytes() const {  // scratch needed to widen it for a product
    return (raw && type != SrcType::F32) ? n * k * sizeof(float) : 0;
  }
};

Weight host_vector(const Checkpoint& c, const std::string& tensor, size_t n) {
  Weight w;
  w.module = tensor;
  w.n = n;
  w.host = load_vector(c, tensor, n);
  return w;
}

Weight describe_linear(const Checkpoint& c, const LinearRef& ref, bool act) {
  Weight w;
  w.module = ref.module;
  w.n = ref.rows;
  w.k = ref.cols;
  const std::string& m = ref.module;
  SrcType t{};
  if (!ref.tensor.empty()) {
    const auto& info = c.info(ref.tensor);
    if (raw_type(info.dtype, &t)) {
      w.type = t;
      w.raw = c.bytes(ref.tensor).data() + ref.row_begin * ref.cols * elem_size(t);
      return w;
    }
  } else if (c.has(m + ".weight") && !c.has(m + ".weight_scale") &&
             !c.has(m + ".weight_scale_inv") && !c.has(m + ".weight_packed")) {
    const auto& info = c.info(m + ".weight");
    if (raw_type(info.dtype, &t) && info.shape.size() == 2 && info.shape[0] == ref.rows &&
        info.shape[1] == ref.cols) {
      w.type = t;
      w.raw = c.bytes(m + ".weight").data();
      w.release = m + ".weight";
      if (c.has(m + ".bias")) {
        w.may_have_bias = true;
        w.bias = load_vector(c, m + ".bias", w.n);
      }
      return w;
    }
  }
  // Everything else: the CPU engine's decoder, run by the loader thread.
  w.may_have_bias = c.has(m + ".bias");
  w.decode = [&c, ref, act](Weight& self) {
    LinearWeights L = load_linear(c, ref, act);
    self.host = std::move(L.w);
    self.bias = std::move(L.bias);
    self.act_gs = L.act_global_scale;
  };
  return w;
}

Weight describe_bmm(const Checkpoint& c, const BmmRef& ref, size_t e, bool act) {
  Weight w;
  w.module = ref.module;
  w.n = ref.n;
  w.k = ref.k;
  const std::string bname = ref.module + "_bias";
  w.may_have_bias = c.has(bname);
  SrcType t{};
  if (ref.storage == BmmRef::Storage::Float && raw_type(c.info(ref.module).dtype, &t)) {
    w.type = t;
    w.kn = true;  // expert e of [E, K, N]
    w.raw = c.bytes(ref.module).data() + e * ref.k * ref.n * elem_size(t);
    if (w.may_have_bias) {
      const auto& b = c.info(bname);
      if (!dtype_is_float(b.dtype) || b.shape.size() != 2 || b.shape[1] != ref.n || e >= b.shape[0])
        throw Error(fmt::format("{}: {} must be a float [E, {}] tensor", c.dir().string(), bname,
                                ref.n));
      w.bias.resize(ref.n);
      decode_to_f32(c.bytes(bname).data() + e * ref.n * dtype_size(b.dtype), b.dtype, ref.n,
                    w.bias.data());
    }
    return w;
  }
  w.decode = [&c, ref, e, act](Weight& self) {
    LinearWeights L = load_bmm_expert(c, ref, e, act);
    self.host = std::move(L.w);
    self.bias = std::move(L.bias);
    self.act_gs = L.act_global_scale;
  };
  return w;
}

struct Mlp {
  Weight gate, up, down;  // BMM: gate = gate_up, up empty
  enum class Fused { No, Interleaved, Split } fused = Fused::No;
};

struct LayerWeights {
  Weight ln1, ln2, q, k, v, o, qn, kn, sinks;
  Mlp dense;
  Weight router;
  std::vector<Mlp> experts;
  Mlp shared;
  Weight shared_gate;
  size_t bytes = 0;  // placed size in the device buffer
  std::vector<Weight*> all() {
    std::vector<Weight*> out{&ln1, &ln2, &q, &k, &v, &o, &qn, &kn, &sinks, &router, &shared_gate};
    for (Mlp* m : {&dense, &shared}) out.insert(out.end(), {&m->gate, &m->up, &m->down});
    for (Mlp& m : experts) out.insert(out.end(), {&m.gate, &m.up, &m.down});
    return out;
  }
};

LayerWeights describe_layer(const Checkpoint& c, const ModelSpec& S, const LayerSpec& L, bool act) {
  const size_t H = static_cast<size_t>(S.hidden), hd = static_cast<size_t>(S.head_dim);
  LayerWeights w;
  w.ln1 = host_vector(c, L.prefix + "input_layernorm.weight", H);
  w.ln2 = host_vector(c, L.prefix + "post_attention_layernorm.weight", H);
  w.q = describe_linear(c, L.q, act);
  w.k = describe_linear(c, L.k, act);
  w.v = describe_linear(c, L.v, act);
  w.o = describe_linear(c, L.o, act);
  if (L.qk_norm) {
    w.qn = host_vector(c, L.prefix + "self_attn.q_norm.weight", hd);
    w.kn = host_vector(c, L.prefix + "self_attn.k_norm.weight", hd);
  }
  if (L.attn_sinks)
    w.sinks = host_vector(c, L.prefix + "self_attn.sinks", static_cast<size_t>(S.n_heads));
  if (!L.moe) {
    w.dense = {describe_linear(c, L.gate, act), describe_linear(c, L.up, act),
               describe_linear(c, L.down, act)};
    return w;
  }
  const size_t E = L.experts.size();
  w.router = describe_linear(c, LinearRef{L.router, "", 0, E, H}, false);
  w.experts.resize(E);
  for (size_t e = 0; e < E; ++e) {
    Mlp& m = w.experts[e];
    if (L.bmm_experts) {
      m.gate = describe_bmm(c, L.bmm_gate_up, e, act);
      m.down = describe_bmm(c, L.bmm_down, e, act);
      m.fused = L.bmm_interleaved ? Mlp::Fused::Interleaved : Mlp::Fused::Split;
    } else {
      const ExpertRef& X = L.experts[e];
      m.gate = describe_linear(c, X.gate, act);
      m.up = describe_linear(c, X.up, act);
      m.down = describe_linear(c, X.down, act);
    }
  }
  if (L.has_shared_expert) {
    w.shared = {describe_linear(c, L.shared_gate, act), describe_linear(c, L.shared_up, act),
                describe_linear(c, L.shared_down, act)};
    if (!L.shared_expert_gate.empty())
      w.shared_gate = describe_linear(c, LinearRef{L.shared_expert_gate, "", 0, 1, H}, false);
  }
  return w;
}

// Assigns offsets in the layer's device buffer; returns its size.
size_t place(std::vector<Weight*> ws) {
  size_t cur = 0;
  for (Weight* w : ws) {
    if (!w->present()) continue;
    w->offset = cur;
    cur += align_up(w->bytes());
    if (w->may_have_bias || !w->bias.empty()) {
      w->bias_offset = cur;
      cur += align_up(w->n * sizeof(float));
    }
  }
  return cur;
}

// Pinned staging ring: host bytes -> pinned chunk (memcpy on all cores) -> device (copy stream).
class Stager {
 public:
  static constexpr size_t kChunk = size_t(64) << 20;
  static constexpr int kChunks = 4;
  explicit Stager(cudaStream_t s) : stream_(s) {
    for (int i = 0; i < kChunks; ++i) {
      check(cudaHostAlloc(&chunk_[i], kChunk, cudaHostAllocDefault), "cudaHostAlloc");
      check(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming), "cudaEventCreate");
    }
  }
  ~Stager() {
    for (int i = 0; i < kChunks; ++i) {
      if (done_[i]) {
        cudaEventSynchronize(done_[i]);
        cudaEventDestroy(done_[i]);
      }
      if (chunk_[i]) cudaFreeHost(chunk_[i]);
    }
  }
  void copy(uint8_t* dev, const void* src, size_t bytes) {
    const uint8_t* p = static_cast<const uint8_t*>(src);
    for (size_t off = 0; off < bytes; off += kChunk) {
      const size_t len = std::min(kChunk, bytes - off);
      const int i = next_;
      next_ = (next_ + 1) % kChunks;
      check(cudaEventSynchronize(done_[i]), "staging");
      uint8_t* dst = static_cast<uint8_t*>(chunk_[i]);
      const uint8_t* from = p + off;
      parallel_for(0, (len + kPiece - 1) / kPiece, 1, [&](size_t b0, size_t b1) {
        for (size_t b = b0; b < b1; ++b) {
          const size_t o = b * kPiece;
          std::memcpy(dst + o, from + o, std::min(kPiece, len - o));
        }
      });
      check(cudaMemcpyAsync(dev + off, dst, len, cudaMemcpyHostToDevice, stream_), "upload");
      check(cudaEventRecord(done_[i], stream_), "cudaEventRecord");
    }
  }

 private:
  static constexpr size_t kPiece = size_t(1) << 20;
  cudaStream_t stream_;
  void* chunk_[kChunks] = {};
  cudaEvent_t done_[kChunks] = {};
  int next_ = 0;
};

void upload_weights(const Checkpoint& c, std::vector<Weight*> ws, uint8_t* base, Stager& st) {
  for (Weight* w : ws) {
    if (!w->present()) continue;
    if (w->decode) {
      w->decode(*w);
      w->decode = nullptr;
      if (w->host.size() != w->n * w->k)
        throw Error(fmt::format("GPU engine: {} decoded to {} values, expected {}", w->module,
                                w->host.size(), w->n * w->k));
    }
    w->dev = base + w->offset;
    st.copy(base + w->offset, w->raw ? static_cast<const void*>(w->raw) : w->host.data(),
            w->bytes());
    if (!w->bias.empty()) st.copy(base + w->bias_offset, w->bias.data(), w->n * sizeof(float));
    if (!w->release.empty()) c.release(w->release);
  }
}

struct Block {
  size_t row0 = 0, rows = 0, seq0 = 0, seq1 = 0, longest = 0;
};

}  // namespace

struct CudaEngine::Impl {
  const Checkpoint& ckpt;
  ModelSpec spec;
  GpuOptions opt;
  std::unique_ptr<Context> ctx;
  DeviceInfo dev;

  // statistics on the device: one slot per group of modules observed together
  struct StatSlot {
    std::vector<std::string> modules;
    size_t k = 0;
    DeviceArray<double> sq;
    int64_t rows = 0;
  };
  std::map<std::string, size_t> slot_of;
  std::vector<std::unique_ptr<StatSlot>> slots;
  DeviceArray<unsigned> amax;
  DeviceArray<int> bad;
  size_t amax_cap = 0;

  // scratch
  DeviceArray<float> wide, actq;

  Impl(const Checkpoint& c, const GpuOptions& o)
      : ckpt(c), spec(ModelSpec::from_checkpoint(c)), opt(o) {
    // The families this engine implements; the CPU engine's newer blocks (Gated DeltaNet, gated
    // attention, zero-centred norms, MLA, ...) have no GPU version yet: refuse rather than run
    // them wrongly.
    switch (spec.family) {
      case Family::Llama: case Family::Mistral: case Family::Qwen2: case Family::Qwen3:
      case Family::Qwen2Moe: case Family::Qwen3Moe: case Family::Mixtral: case Family::GptOss:
      case Family::Llama4:
        break;
      default:
        throw Error(fmt::format("{}: the GPU engine does not run {} models yet; use --device cpu",
                                c.dir().string(), family_name(spec.family)));
    }
    dev = device_info(o.device);
    ctx = std::make_unique<Context>(o.device, o.tf32 ? Math::Tf32 : Math::Fp32);
  }

  cudaStream_t s() const { return ctx->compute(); }

  size_t inter_max() const {
    size_t inter = 0;
    for (const auto& L : spec.layers) {
      inter = std::max<size_t>(inter, L.moe ? (L.bmm_experts ? L.bmm_down.k : L.experts.front().gate.rows)
                                            : L.gate.rows);
      if (L.has_shared_expert) inter = std::max<size_t>(inter, L.shared_gate.rows);
    }
    return inter;
  }

  size_t block_rows(size_t longest) const { return std::max(opt.block_tokens, longest); }

  // --- statistics
  void observe(std::initializer_list<const std::string*> modules, const float* x, size_t rows,
               size_t k) {
    const std::string& key = **modules.begin();
    auto it = slot_of.find(key);
    if (it == slot_of.end()) {
      if (slots.size() >= amax_cap) throw Error("GPU engine: statistics slots exhausted");
      auto sl = std::make_unique<StatSlot>();
      for (const std::string* m : modules) sl->modules.push_back(*m);
      sl->k = k;
      sl->sq.reserve(k);
      check(cudaMemsetAsync(sl->sq.data(), 0, k * sizeof(double), s()), "memset");
      it = slot_of.emplace(key, slots.size()).first;
      slots.push_back(std::move(sl));
    }
    StatSlot& sl = *slots[it->second];
    if (sl.k != k) throw Error("calibration: input width of " + key + " changed");
    input_stats(x, rows, k, sl.sq.data(), amax.data() + it->second, bad.data(), s());
    sl.rows += static_cast<int64_t>(rows);
  }

  void check_finite(size_t layer) {
    int b = 0;
    download(&b, bad.data(), sizeof(int), s());
    if (b)
      throw Error(fmt::format("calibration: non-finite activation entering a linear of layer {} "
                              "(the model produced NaN/Inf on this data)", layer));
  }

  void flush_stats(StatsCollector& out) {
    std::vector<unsigned> bits(slots.size());
    download(bits.data(), amax.data(), bits.size() * sizeof(unsigned), s());
    for (size_t i = 0; i < slots.size(); ++i) {
      std::vector<double> sq(slots[i]->k);
      download(sq.data(), slots[i]->sq.data(), sq.size() * sizeof(double), s());
      float a;
      std::memcpy(&a, &bits[i], sizeof(float));
      for (const auto& m : slots[i]->modules) out.add_reduced(m, a, sq, slots[i]->rows);
    }
  }

  // --- products
  const float* as_f32(const Weight& w) {
    if (!w.raw || w.type == SrcType::F32) return reinterpret_cast<const float*>(w.dev);
    to_f32(w.dev, w.type, w.n * w.k, wide.data(), s());
    return wide.data();
  }

  // y[rows, n] = x W^T (+ b); W4A4 inputs quantized first (into actq, x untouched).
  void linear(const Weight& w, const float* x, size_t rows, float* y, bool exact = false) {
    if (rows == 0) return;
    const float* in = x;
    if (w.act_gs > 0.0f) {
      check(cudaMemcpyAsync(actq.data(), x, rows * w.k * sizeof(float), cudaMemcpyDeviceToDevice,
                            s()), "copy");
      nvfp4_fake_quant(actq.data(), rows, w.k, w.act_gs, s());
      in = actq.data();
    }
    ctx->gemm_nt(in, rows, w.k, as_f32(w), w.n, y, w.kn, exact);
    if (!w.bias.empty())
      add_bias(y, rows, w.n, reinterpret_cast<const float*>(w.dev - w.offset + w.bias_offset), s());
  }

  const float* vec(const Weight& w) const { return reinterpret_cast<const float*>(w.dev); }

  struct Scratch {
    DeviceArray<float> normed, q, k, v, att, tmp, g, u, xin, y, slot_out, logits, moe_out, gl;
    DeviceArray<int32_t> sel, counts, offsets, rows, slots, pos;
    DeviceArray<float> selw, ones, cs, sn, temp;
    DeviceArray<int64_t> seq_off;
  };

  void run_mlp(const Mlp& w, const float* x, size_t rows, float* out, bool obs, Scratch& sc) {
    if (w.fused != Mlp::Fused::No) {
      const size_t inter = w.down.k;
      if (obs) observe({&w.gate.module}, x, rows, w.gate.k);
      linear(w.gate, x, rows, sc.u.data());
      if (w.fused == Mlp::Fused::Interleaved)
        clamped_swiglu_interleaved(sc.u.data(), rows, inter, spec.swiglu_alpha, spec.swiglu_limit,
                                   sc.g.data(), s());
      else
        silu_glu_split(sc.u.data(), rows, inter, sc.g.data(), s());
      if (obs) observe({&w.down.module}, sc.g.data(), rows, inter);
      linear(w.down, sc.g.data(), rows, out);
      return;
    }
    const size_t inter = w.gate.n;
    if (obs) observe({&w.gate.module, &w.up.module}, x, rows, w.gate.k);
    linear(w.gate, x, rows, sc.g.data());
    linear(w.up, x, rows, sc.u.data());
    silu_mul(sc.g.data(), sc.u.data(), rows * inter, s());
    if (obs) observe({&w.down.module}, sc.g.data(), rows, inter);
    linear(w.down, sc.g.data(), rows, out);
  }
};

CudaEngine::CudaEngine(const Checkpoint& ckpt, const GpuOptions& options)
    : impl_(std::make_unique<Impl>(ckpt, options)) {}
CudaEngine::~CudaEngine() = default;
const ModelSpec& CudaEngine::spec() const { return impl_->spec; }

GpuMemoryPlan CudaEngine::memory_plan(size_t tokens, size_t longest, bool logits) const {
  const Impl& I = *impl_;
  const ModelSpec& S = I.spec;
  GpuMemoryPlan p;
  auto sz = [](const LinearRef& r, size_t es) { return align_up(r.rows * r.cols * es); };
  // Per layer, the upper bound of its placed size: every linear as float32 when it is not a raw
  // 16-bit tensor is not known without decoding, so count 4 bytes per weight for non-16-bit
  // storage and the stored element size otherwise.
  auto es_of = [&](const LinearRef& r) -> size_t {
    const std::string t = r.tensor.empty() ? r.module + ".weight" : r.tensor;
    if (I.ckpt.has(t)) {
      SrcType st{};
      if (raw_type(I.ckpt.info(t).dtype, &st) && !I.ckpt.has(r.module + ".weight_scale"))
        return elem_size(st);
    }
    return 4;
  };
  size_t layer_max = 0, widest = 0;
  const size_t H = static_cast<size_t>(S.hidden);
  for (const auto& L : S.layers) {
    size_t b = 0;
    auto add = [&](const LinearRef& r) {
      b += sz(r, es_of(r)) + align_up(r.rows * 4);
      widest = std::max<size_t>(widest, r.rows * r.cols * 4);
    };
    for (const LinearRef* r : {&L.q, &L.k, &L.v, &L.o}) add(*r);
    b += 4 * align_up(H * 4);
    if (!L.moe) {
      for (const LinearRef* r : {&L.gate, &L.up, &L.down}) add(*r);
    } else {
      b += align_up(L.experts.size() * H * 4);
      if (L.bmm_experts) {
        const size_t es = L.bmm_gate_up.storage == BmmRef::Storage::Float
                              ? dtype_size(I.ckpt.info(L.bmm_gate_up.module).dtype) : 4;
        for (const BmmRef* r : {&L.bmm_gate_up, &L.bmm_down}) {
          b += L.experts.size() * (align_up(r->n * r->k * es) + align_up(r->n * 4));
          widest = std::max<size_t>(widest, r->n * r->k * 4);
        }
      } else {
        for (const auto& X : L.experts)
          for (const LinearRef* r : {&X.gate, &X.up, &X.down}) add(*r);
      }
      if (L.has_shared_expert)
        for (const LinearRef* r : {&L.shared_gate, &L.shared_up, &L.shared_down}) add(*r);
    }
    layer_max = std::max(layer_max, b);
  }
  p.weight_buffers = 2 * layer_max;
  p.weight_scratch = widest;
  const size_t B = std::min(tokens, I.block_rows(longest));
  const size_t qdim = static_cast<size_t>(S.n_heads * S.head_dim);
  const size_t kvdim = static_cast<size_t>(S.n_kv_heads * S.head_dim);
  const size_t inter = I.inter_max();
  const size_t K = static_cast<size_t>(std::max<int64_t>(S.top_k, 1));
  const size_t E = static_cast<size_t>(std::max<int64_t>(S.n_experts, 1));
  size_t f = tokens * H;                                    // hidden states
  f += B * (3 * H + 2 * qdim + 2 * kvdim);                  // normed, tmp, moe_out, q, att, k, v
  f += B * (2 * H + 4 * inter) + B * std::max(H, qdim);     // xin, y, g, u, W4A4 input copy
  if (S.n_experts > 0) f += B * K * H + B * E + 2 * B * K;  // slots, router logits, weights
  size_t bytes = f * sizeof(float) + tokens * 8;
  if (logits) {
    const size_t head = static_cast<size_t>(S.lm_head.rows * S.lm_head.cols);
    bytes += longest * static_cast<size_t>(S.vocab) * sizeof(float) + head * sizeof(float);
    p.weight_scratch = std::max(p.weight_scratch, head * sizeof(float));
  }
  p.activations = bytes;
  return p;
}

void CudaEngine::run(const std::vector<std::vector<int32_t>>& seqs, const ForwardOptions& opt,
                     StatsCollector* stats, const LogitsSink& sink) {
  Impl& I = *impl_;
  const ModelSpec& S = I.spec;
  const Checkpoint& c = I.ckpt;
  const cudaStream_t cs = I.s();
  const size_t H = static_cast<size_t>(S.hidden);
  const int nh = static_cast<int>(S.n_heads), nkv = static_cast<int>(S.n_kv_heads);
  const int hd = static_cast<int>(S.head_dim);
  const size_t qdim = static_cast<size_t>(nh) * hd, kvdim = static_cast<size_t>(nkv) * hd;
  const bool act = opt.simulate_activations;
  const bool obs = stats != nullptr;

  std::vector<size_t> offsets(seqs.size() + 1, 0);
  size_t longest = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].empty()) throw Error("engine: empty sequence " + std::to_string(s));
    offsets[s + 1] = offsets[s] + seqs[s].size();
    longest = std::max(longest, seqs[s].size());
  }
  const size_t T = offsets.back();
  if (T == 0) return;

  // ---- memory: stated, checked against what the device has free
  const GpuMemoryPlan plan = memory_plan(T, longest, static_cast<bool>(sink));
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  const size_t reserve = size_t(512) << 20;  // cuBLAS workspace, pinned staging, allocator slack
  if (plan.total() + reserve > free_b)
    throw Error(fmt::format(
        "GPU {} ({}): the run needs {:.2f} GiB (weights {:.2f} GiB double-buffered + {:.2f} GiB "
        "widening scratch, activations {:.2f} GiB) plus {:.2f} GiB reserve, but only {:.2f} GiB "
        "of {:.2f} GiB is free; use fewer --samples or another device",
        I.dev.index, I.dev.name, plan.total() / 1073741824.0, plan.weight_buffers / 1073741824.0,
        plan.weight_scratch / 1073741824.0, plan.activations / 1073741824.0,
        reserve / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0));

  // ---- blocks of whole sequences
  const size_t bmax = I.block_rows(longest);
  std::vector<Block> blocks;
  {
    Block b;
    for (size_t s = 0; s < seqs.size(); ++s) {
      if (b.rows > 0 && b.rows + seqs[s].size() > bmax) {
        blocks.push_back(b);
        b = Block{};
      }
      if (b.rows == 0) {
        b.row0 = offsets[s];
        b.seq0 = s;
      }
      b.rows += seqs[s].size();
      b.seq1 = s + 1;
      b.longest = std::max(b.longest, seqs[s].size());
    }
    if (b.rows > 0) blocks.push_back(b);
  }
  size_t B = 0;
  for (const Block& b : blocks) B = std::max(B, b.rows);

  // ---- per-run tables: positions, sequence offsets (relative to each block), RoPE, temperature
  Impl::Scratch sc;
  std::vector<int32_t> pos(T);
  std::vector<int64_t> seq_off;
  std::vector<size_t> block_off_at(blocks.size());
  for (size_t s = 0; s < seqs.size(); ++s)
    for (size_t p = 0; p < seqs[s].size(); ++p) pos[offsets[s] + p] = static_cast<int32_t>(p);
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    block_off_at[bi] = seq_off.size();
    for (size_t s = blocks[bi].seq0; s <= blocks[bi].seq1; ++s)
      seq_off.push_back(static_cast<int64_t>(offsets[s] - blocks[bi].row0));
  }
  upload(sc.pos, pos, cs);
  upload(sc.seq_off, seq_off, cs);
  {
    const Rope rope(S.rope);
    const size_t half = static_cast<size_t>(hd / 2);
    std::vector<float> cosv(longest * half), sinv(longest * half), x(static_cast<size_t>(hd)),
        temp(longest);
    for (size_t p = 0; p < longest; ++p) {
      // The CPU engine's rotation of (1, 0) pairs gives exactly its cos and sin.
      std::fill(x.begin(), x.end(), 0.0f);
      if (S.rope_interleaved) {
        for (size_t i = 0; i < half; ++i) x[2 * i] = 1.0f;
        rope.apply_interleaved(x.data(), 1, hd, p);
        for (size_t i = 0; i < half; ++i) cosv[p * half + i] = x[2 * i], sinv[p * half + i] = x[2 * i + 1];
      } else {
        for (size_t i = 0; i < half; ++i) x[i] = 1.0f;
        rope.apply(x.data(), 1, hd, p);
        for (size_t i = 0; i < half; ++i) cosv[p * half + i] = x[i], sinv[p * half + i] = x[half + i];
      }
      temp[p] = llama4_attn_temperature(p, S.floor_scale, S.attn_scale);
    }
    upload(sc.cs, cosv, cs);
    upload(sc.sn, sinv, cs);
    upload(sc.temp, temp, cs);
    upload(sc.ones, std::vector<float>(static_cast<size_t>(hd), 1.0f), cs);
  }

  // ---- activations
  const size_t inter = I.inter_max();
  const size_t K = static_cast<size_t>(std::max<int64_t>(S.top_k, 1));
  const size_t E = static_cast<size_t>(std::max<int64_t>(S.n_experts, 1));
  DeviceArray<float> hidden(T * H);
  {
    std::vector<float> h(T * H);
    parallel_for(0, seqs.size(), 1, [&](size_t s0, size_t s1) {
      for (size_t s = s0; s < s1; ++s)
        engine::gather_rows(c, S.embed, seqs[s].data(), seqs[s].size(), H, h.data() + offsets[s] * H);
    });
    upload(hidden.data(), h.data(), h.size() * sizeof(float), cs);
  }
  sc.normed.reserve(B * H);
  sc.tmp.reserve(B * H);
  sc.q.reserve(B * qdim);
  sc.att.reserve(B * qdim);
  sc.k.reserve(B * kvdim);
  sc.v.reserve(B * kvdim);
  sc.g.reserve(B * std::max<size_t>(inter, 1));
  sc.u.reserve(B * 2 * std::max<size_t>(inter, 1));
  sc.xin.reserve(B * H);
  sc.y.reserve(B * H);
  I.actq.reserve(B * std::max({H, qdim, 2 * std::max<size_t>(inter, 1)}));
  if (S.n_experts > 0) {
    sc.slot_out.reserve(B * K * H);
    sc.logits.reserve(B * E);
    sc.moe_out.reserve(B * H);
    sc.sel.reserve(B * K);
    sc.selw.reserve(B * K);
    sc.rows.reserve(B * K);
    sc.slots.reserve(B * K);
    sc.counts.reserve(E);
    sc.offsets.reserve(E + 1);
    sc.gl.reserve(B);
  }
  // statistics slots: at most 2 groups per attention, 2 per MLP, 2 per expert
  I.amax_cap = 8 + S.layers.size() * (6 + 2 * E);
  I.slots.clear();
  I.slot_of.clear();
  I.amax.reserve(I.amax_cap);
  I.bad.reserve(1);
  check(cudaMemsetAsync(I.amax.data(), 0, I.amax_cap * sizeof(unsigned), cs), "memset");
  check(cudaMemsetAsync(I.bad.data(), 0, sizeof(int), cs), "memset");

  // ---- weights: describe every layer (no decoding yet), place, two device buffers
  std::vector<LayerWeights> layers;
  layers.reserve(S.layers.size());
  size_t buf_bytes = 0, widest = 0;
  for (const auto& L : S.layers) {
    layers.push_back(describe_layer(c, S, L, act));
    layers.back().bytes = place(layers.back().all());
    buf_bytes = std::max(buf_bytes, layers.back().bytes);
    for (Weight* w : layers.back().all()) widest = std::max(widest, w->widened_bytes());
  }
  DeviceArray<uint8_t> wbuf[2];
  wbuf[0].reserve(std::max<size_t>(buf_bytes, 1));
  wbuf[1].reserve(std::max<size_t>(buf_bytes, 1));
  I.wide.reserve(std::max<size_t>(widest / sizeof(float), 1));
  I.ctx->sync();

  cudaEvent_t uploaded[2], computed[2];
  for (int i = 0; i < 2; ++i) {
    check(cudaEventCreateWithFlags(&uploaded[i], cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventCreateWithFlags(&computed[i], cudaEventDisableTiming), "cudaEventCreate");
  }
  struct EventGuard {
    cudaEvent_t* a;
    cudaEvent_t* b;
    ~EventGuard() {
      for (int i = 0; i < 2; ++i) cudaEventDestroy(a[i]), cudaEventDestroy(b[i]);
    }
  } guard{uploaded, computed};

  // ---- loader thread
  std::mutex mu;
  std::condition_variable cv;
  size_t n_uploaded = 0, n_computed = 0;
  bool stop = false;
  std::exception_ptr load_error;
  const size_t NL = layers.size();
  std::thread loader([&] {
    try {
      check(cudaSetDevice(I.dev.index), "cudaSetDevice");
      Stager st(I.ctx->copy());
      for (size_t li = 0; li < NL; ++li) {
        {
          std::unique_lock<std::mutex> lk(mu);
          cv.wait(lk, [&] { return stop || li < 2 || n_computed + 2 > li; });
          if (stop) return;
        }
        if (li >= 2) check(cudaStreamWaitEvent(I.ctx->copy(), computed[li % 2], 0), "wait");
        upload_weights(c, layers[li].all(), wbuf[li % 2].data(), st);
        check(cudaEventRecord(uploaded[li % 2], I.ctx->copy()), "cudaEventRecord");
        {
          std::lock_guard<std::mutex> lk(mu);
          n_uploaded = li + 1;
        }
        cv.notify_all();
      }
      check(cudaStreamSynchronize(I.ctx->copy()), "upload");
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu);
      load_error = std::current_exception();
      stop = true;
      cv.notify_all();
    }
  });
  struct Joiner {
    std::thread& t;
    std::mutex& mu;
    bool& stop;
    std::condition_variable& cv;
    ~Joiner() {
      {
        std::lock_guard<std::mutex> lk(mu);
        stop = true;
      }
      cv.notify_all();
      if (t.joinable()) t.join();
    }
  } joiner{loader, mu, stop, cv};

  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (size_t li = 0; li < NL; ++li) {
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return load_error || n_uploaded > li; });
      if (load_error) std::rethrow_exception(load_error);
    }
    check(cudaStreamWaitEvent(cs, uploaded[li % 2], 0), "wait");
    const LayerSpec& L = S.layers[li];
    LayerWeights& W = layers[li];
    // ---- attention
    for (size_t bi = 0; bi < blocks.size(); ++bi) {
      const Block& b = blocks[bi];
      float* h = hidden.data() + b.row0 * H;
      const int32_t* bpos = sc.pos.data() + b.row0;
      rms_norm(h, b.rows, H, I.vec(W.ln1), 0.0f, S.eps, sc.normed.data(), cs);
      if (obs) I.observe({&W.q.module, &W.k.module, &W.v.module}, sc.normed.data(), b.rows, H);
      I.linear(W.q, sc.normed.data(), b.rows, sc.q.data());
      I.linear(W.k, sc.normed.data(), b.rows, sc.k.data());
      I.linear(W.v, sc.normed.data(), b.rows, sc.v.data());
      if (L.qk_norm) {
        rms_norm(sc.q.data(), b.rows * nh, hd, I.vec(W.qn), 0.0f, S.eps, sc.q.data(), cs);
        rms_norm(sc.k.data(), b.rows * nkv, hd, I.vec(W.kn), 0.0f, S.eps, sc.k.data(), cs);
      }
      if (L.rope) {
        rope(sc.q.data(), b.rows, qdim, nh, hd, bpos, sc.cs.data(), sc.sn.data(),
             S.rope_interleaved, cs);
        rope(sc.k.data(), b.rows, kvdim, nkv, hd, bpos, sc.cs.data(), sc.sn.data(),
             S.rope_interleaved, cs);
      } else if (L.temperature_tuning) {
        scale_rows_by_position(sc.q.data(), b.rows, qdim, qdim, bpos, sc.temp.data(), cs);
      }
      if (L.l2_qk_norm) {
        rms_norm(sc.q.data(), b.rows * nh, hd, sc.ones.data(), 0.0f, S.eps, sc.q.data(), cs);
        rms_norm(sc.k.data(), b.rows * nkv, hd, sc.ones.data(), 0.0f, S.eps, sc.k.data(), cs);
      }
      causal_attention(sc.q.data(), qdim, sc.k.data(), sc.v.data(), kvdim,
                       sc.seq_off.data() + block_off_at[bi], static_cast<int>(b.seq1 - b.seq0),
                       static_cast<int>(b.longest), nh, nkv, hd, scale, L.sliding_window,
                       L.attention_chunk, L.attn_sinks ? I.vec(W.sinks) : nullptr,
                       sc.att.data(), qdim, cs);
      if (obs) I.observe({&W.o.module}, sc.att.data(), b.rows, qdim);
      I.linear(W.o, sc.att.data(), b.rows, sc.tmp.data());
      add_inplace(h, sc.tmp.data(), b.rows * H, cs);
    }
    // ---- MLP
    for (const Block& b : blocks) {
      float* h = hidden.data() + b.row0 * H;
      const size_t n = b.rows;
      rms_norm(h, n, H, I.vec(W.ln2), 0.0f, S.eps, sc.normed.data(), cs);
      if (!L.moe) {
        I.run_mlp(W.dense, sc.normed.data(), n, sc.tmp.data(), obs, sc);
        add_inplace(h, sc.tmp.data(), n * H, cs);
        continue;
      }
      const bool scaled = S.routing == Routing::TopkSigmoidScaledInput;
      const int Ei = static_cast<int>(L.experts.size()), Ki = static_cast<int>(K);
      I.linear(W.router, sc.normed.data(), n, sc.logits.data(), /*exact=*/true);
      const RouteMode mode = S.routing == Routing::SoftmaxTopk   ? RouteMode::SoftmaxTopk
                             : S.routing == Routing::TopkSoftmax ? RouteMode::TopkSoftmax
                                                                 : RouteMode::TopkSigmoid;
      route_topk(sc.logits.data(), n, Ei, Ki, mode, S.norm_topk, sc.sel.data(), sc.selw.data(), cs);
      expert_counts(sc.sel.data(), n * K, Ei, sc.counts.data(), cs);
      std::vector<int32_t> counts(static_cast<size_t>(Ei)), eoff(static_cast<size_t>(Ei) + 1, 0);
      download(counts.data(), sc.counts.data(), counts.size() * sizeof(int32_t), cs);
      for (int e = 0; e < Ei; ++e) eoff[e + 1] = eoff[e] + counts[e];
      check(cudaMemcpyAsync(sc.offsets.data(), eoff.data(), eoff.size() * sizeof(int32_t),
                            cudaMemcpyHostToDevice, cs), "upload");
      expert_lists(sc.sel.data(), n * K, Ki, Ei, sc.offsets.data(), sc.rows.data(),
                   sc.slots.data(), cs);
      check(cudaMemsetAsync(sc.moe_out.data(), 0, n * H * sizeof(float), cs), "memset");
      const bool all = opt.all_experts && obs;
      for (int e = 0; e < Ei; ++e) {
        if (obs) stats->routed(L.experts[static_cast<size_t>(e)].prefix, counts[e]);
        const Mlp& w = W.experts[static_cast<size_t>(e)];
        if (all) {
          const float* in = sc.normed.data();
          if (scaled) {
            scale_by_sigmoid_logit(sc.normed.data(), sc.logits.data(), Ei, e, n, H, sc.xin.data(), cs);
            in = sc.xin.data();
          }
          I.run_mlp(w, in, n, sc.y.data(), obs, sc);
          add_routed(sc.y.data(), sc.sel.data(), sc.selw.data(), !scaled, n, Ki, e, H,
                     sc.moe_out.data(), cs);
          continue;
        }
        const size_t cnt = static_cast<size_t>(counts[e]);
        if (cnt == 0) continue;
        const int32_t* rows = sc.rows.data() + eoff[e];
        const int32_t* slots = sc.slots.data() + eoff[e];
        gather_rows(sc.normed.data(), H, rows, slots, scaled ? sc.selw.data() : nullptr, cnt,
                    sc.xin.data(), cs);
        I.run_mlp(w, sc.xin.data(), cnt, sc.y.data(), obs, sc);
        scatter_rows(sc.y.data(), H, slots, cnt, sc.slot_out.data(), cs);
      }
      if (!all)
        combine_slots(sc.slot_out.data(), scaled ? nullptr : sc.selw.data(), n, Ki, H,
                      sc.moe_out.data(), cs);
      if (L.has_shared_expert) {
        I.run_mlp(W.shared, sc.normed.data(), n, sc.y.data(), obs, sc);
        if (W.shared_gate.present())
          I.linear(W.shared_gate, sc.normed.data(), n, sc.gl.data(), /*exact=*/true);
        add_gated_rows(sc.moe_out.data(), sc.y.data(),
                       W.shared_gate.present() ? sc.gl.data() : nullptr, n, H, cs);
      }
      add_inplace(h, sc.moe_out.data(), n * H, cs);
    }
    check(cudaEventRecord(computed[li % 2], cs), "cudaEventRecord");
    {
      std::lock_guard<std::mutex> lk(mu);
      n_computed = li + 1;
    }
    cv.notify_all();
    if (obs) I.check_finite(li);
    I.ctx->sync();
    layers[li] = LayerWeights{};  // host copies of decoded weights freed
    if (opt.on_layer) opt.on_layer(static_cast<int64_t>(li), static_cast<int64_t>(NL));
  }
  loader.join();
  if (load_error) std::rethrow_exception(load_error);
  if (obs) I.flush_stats(*stats);
  if (!sink) return;

  // ---- final norm and lm_head, one sequence at a time
  Weight fn = host_vector(c, S.final_norm, H);
  Weight head;
  if (S.lm_head_tied) {
    head.module = S.lm_head.module;
    head.n = S.lm_head.rows;
    head.k = S.lm_head.cols;
    const auto& info = c.info(S.embed);
    if (!raw_type(info.dtype, &head.type) || info.shape.size() != 2 || info.shape[1] != H)
      throw Error(fmt::format("{}: embedding {} must be a float [vocab, {}] tensor",
                              c.dir().string(), S.embed, H));
    head.raw = c.bytes(S.embed).data();
  } else {
    head = describe_linear(c, S.lm_head, false);  // lm_head is never quantized at run time
  }
  if (head.k != H) throw Error(c.dir().string() + ": lm_head width does not match hidden_size");
  {
    const size_t bytes = place({&fn, &head});
    wbuf[0].reserve(bytes);
    Stager st(cs);
    upload_weights(c, {&fn, &head}, wbuf[0].data(), st);
    I.wide.reserve(head.widened_bytes() / sizeof(float) + 1);
    I.ctx->sync();
  }
  const float* headw = I.as_f32(head);
  DeviceArray<float> lg(longest * head.n);
  std::vector<float> host_lg;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const size_t n = seqs[s].size();
    rms_norm(hidden.data() + offsets[s] * H, n, H, I.vec(fn), 0.0f, S.eps, sc.normed.data(), cs);
    I.ctx->gemm_nt(sc.normed.data(), n, H, headw, head.n, lg.data(), false, false);
    if (!head.bias.empty())
      add_bias(lg.data(), n, head.n,
               reinterpret_cast<const float*>(head.dev - head.offset + head.bias_offset), cs);
    host_lg.resize(n * head.n);
    download(host_lg.data(), lg.data(), host_lg.size() * sizeof(float), cs);
    sink(s, host_lg.data(), n, head.n);
  }
}

}  // namespace fp4kit::engine::cuda
