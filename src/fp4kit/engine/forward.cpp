// Layer-by-layer forward pass (transformers semantics, float32). Per layer: attention over blocks
// of whole sequences, then the MLP (dense, or MoE expert by expert over all tokens).
#include "fp4kit/engine/forward.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "fp4kit/engine/act_quant.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/rope.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine {
namespace {

// y = x W^T (+ b); x is quantized first for W4A4 linears (into `scratch`, x stays untouched).
void apply_linear(const LinearWeights& L, const float* x, size_t rows, float* y,
                  std::vector<float>& scratch) {
  const float* in = x;
  if (L.act_global_scale > 0.0f) {
    scratch.assign(x, x + rows * L.k);
    nvfp4_fake_quant_activations(scratch.data(), rows, L.k, L.act_global_scale);
    in = scratch.data();
  }
  matmul_nt(in, rows, L.k, L.w.data(), L.n, y, L.bias.empty() ? nullptr : L.bias.data());
}

struct Block {
  size_t row0 = 0, rows = 0;
  size_t seq0 = 0, seq1 = 0;  // sequences [seq0, seq1)
};

// Blocks of whole sequences of about `chunk` tokens (a longer sequence is a block of its own).
std::vector<Block> make_blocks(const std::vector<size_t>& offsets,
                               const std::vector<std::vector<int32_t>>& seqs, size_t chunk) {
  std::vector<Block> out;
  Block b;
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (b.rows > 0 && b.rows + seqs[s].size() > chunk) {
      out.push_back(b);
      b = Block{};
    }
    if (b.rows == 0) {
      b.row0 = offsets[s];
      b.seq0 = s;
    }
    b.rows += seqs[s].size();
    b.seq1 = s + 1;
  }
  if (b.rows > 0) out.push_back(b);
  return out;
}

struct MlpWeights {
  LinearWeights gate, up, down;
  // BMM expert: `gate` holds gate_up [2I, H] and `up` is empty. gpt-oss (interleaved): gate/up
  // rows interleaved, clamped SwiGLU with these parameters; Llama-4 (split): gate = rows [0, I),
  // up = rows [I, 2I), plain SiLU-GLU.
  enum class Fused { No, Interleaved, Split };
  Fused fused = Fused::No;
  float alpha = 0.0f, limit = 0.0f;
};

MlpWeights load_mlp(const Checkpoint& c, const LinearRef& g, const LinearRef& u,
                    const LinearRef& d, bool act) {
  MlpWeights w;
  w.gate = load_linear(c, g, act);
  w.up = load_linear(c, u, act);
  w.down = load_linear(c, d, act);
  return w;
}

MlpWeights load_bmm_mlp(const Checkpoint& c, const ModelSpec& S, const LayerSpec& L, size_t e,
                        bool act) {
  MlpWeights w;
  w.gate = load_bmm_expert(c, L.bmm_gate_up, e, act);
  w.down = load_bmm_expert(c, L.bmm_down, e, act);
  w.fused = L.bmm_interleaved ? MlpWeights::Fused::Interleaved : MlpWeights::Fused::Split;
  w.alpha = S.swiglu_alpha;
  w.limit = S.swiglu_limit;
  return w;
}

// out [rows, hidden] = down(silu(gate x) * up x); observes gate/up input and down input.
void run_mlp(const MlpWeights& w, const float* x, size_t rows, float* out,
             ActivationObserver* obs, std::vector<float>& g, std::vector<float>& u,
             std::vector<float>& scratch) {
  if (w.fused != MlpWeights::Fused::No) {
    // One module (the 3-D gate_up_proj) reads x: observed once, not once per half.
    const size_t inter = w.down.k;
    if (obs) obs->linear_input({&w.gate.module}, x, rows, w.gate.k);
    u.resize(rows * 2 * inter);
    g.resize(rows * inter);
    apply_linear(w.gate, x, rows, u.data(), scratch);
    if (w.fused == MlpWeights::Fused::Interleaved)
      clamped_swiglu_interleaved(u.data(), rows, inter, w.alpha, w.limit, g.data());
    else
      silu_glu_split(u.data(), rows, inter, g.data());
    if (obs) obs->linear_input({&w.down.module}, g.data(), rows, inter);
    apply_linear(w.down, g.data(), rows, out, scratch);
    return;
  }
  const size_t inter = w.gate.n;
  if (obs) obs->linear_input({&w.gate.module, &w.up.module}, x, rows, w.gate.k);
  g.resize(rows * inter);
  u.resize(rows * inter);
  apply_linear(w.gate, x, rows, g.data(), scratch);
  apply_linear(w.up, x, rows, u.data(), scratch);
  silu_mul(g.data(), u.data(), rows * inter);
  if (obs) obs->linear_input({&w.down.module}, g.data(), rows, inter);
  apply_linear(w.down, g.data(), rows, out, scratch);
}

}  // namespace

Engine::Engine(const Checkpoint& ckpt) : ckpt_(ckpt), spec_(ModelSpec::from_checkpoint(ckpt)) {}

size_t Engine::activation_bytes(size_t tokens, size_t chunk, size_t longest) const {
  const size_t H = static_cast<size_t>(spec_.hidden);
  const size_t qkv = static_cast<size_t>((spec_.n_heads + 2 * spec_.n_kv_heads) * spec_.head_dim);
  size_t inter = 0;
  for (const auto& L : spec_.layers) {
    inter = std::max<size_t>(inter, L.moe ? L.experts.front().gate.rows : L.gate.rows);
    if (L.has_shared_expert) inter = std::max<size_t>(inter, L.shared_gate.rows);
  }
  const bool any_moe = std::any_of(spec_.layers.begin(), spec_.layers.end(),
                                   [](const LayerSpec& L) { return L.moe; });
  const size_t block = std::max(chunk, longest);
  size_t floats = tokens * H;                          // hidden states
  if (any_moe) floats += 2 * tokens * H + tokens * static_cast<size_t>(spec_.n_experts);
  floats += block * (2 * H + qkv + 4 * inter);         // one block's intermediates
  floats += longest * static_cast<size_t>(spec_.vocab);  // one sequence's logits
  return floats * sizeof(float);
}

size_t Engine::peak_weight_bytes() const {
  auto sz = [](const LinearRef& r) { return static_cast<size_t>(r.rows * r.cols); };
  size_t peak = static_cast<size_t>(spec_.lm_head.rows * spec_.lm_head.cols);
  for (const auto& L : spec_.layers) {
    const size_t attn = sz(L.q) + sz(L.k) + sz(L.v) + sz(L.o);
    size_t mlp = 0;
    if (!L.moe) {
      mlp = sz(L.gate) + sz(L.up) + sz(L.down);
    } else {
      const auto& x = L.experts.front();
      mlp = sz(x.gate) + sz(x.up) + sz(x.down);
      if (L.has_shared_expert)
        mlp = std::max(mlp, sz(L.shared_gate) + sz(L.shared_up) + sz(L.shared_down));
    }
    peak = std::max(peak, std::max(attn, mlp));
  }
  return peak * sizeof(float);
}

void Engine::run(const std::vector<std::vector<int32_t>>& seqs, const ForwardOptions& opt,
                 ActivationObserver* obs, const LogitsSink& sink) const {
  const ModelSpec& S = spec_;
  const size_t H = static_cast<size_t>(S.hidden);
  const int nh = static_cast<int>(S.n_heads), nkv = static_cast<int>(S.n_kv_heads);
  const int hd = static_cast<int>(S.head_dim);
  const size_t qdim = static_cast<size_t>(nh) * hd, kvdim = static_cast<size_t>(nkv) * hd;
  const bool act = opt.simulate_activations;

  std::vector<size_t> offsets(seqs.size() + 1, 0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].empty()) throw Error("engine: empty sequence " + std::to_string(s));
    offsets[s + 1] = offsets[s] + seqs[s].size();
  }
  const size_t T = offsets.back();
  if (T == 0) return;
  const std::vector<Block> blocks = make_blocks(offsets, seqs, std::max<size_t>(opt.chunk_tokens, 1));

  std::vector<float> hidden(T * H);
  for (size_t s = 0; s < seqs.size(); ++s)
    gather_rows(ckpt_, S.embed, seqs[s].data(), seqs[s].size(), H, hidden.data() + offsets[s] * H);

  const Rope rope(S.rope);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> normed, q, k, v, att, tmp, g, u, scratch;

  for (size_t li = 0; li < S.layers.size(); ++li) {
    const LayerSpec& L = S.layers[li];
    // ---- attention ----
    {
      const auto ln = load_vector(ckpt_, L.prefix + "input_layernorm.weight", H);
      const LinearWeights wq = load_linear(ckpt_, L.q, act), wk = load_linear(ckpt_, L.k, act),
                          wv = load_linear(ckpt_, L.v, act), wo = load_linear(ckpt_, L.o, act);
      std::vector<float> qn, kn, sinks, ones;
      if (L.l2_qk_norm) ones.assign(static_cast<size_t>(hd), 1.0f);  // Llama-4: no weight
      if (L.attn_sinks)
        sinks = load_vector(ckpt_, L.prefix + "self_attn.sinks", static_cast<size_t>(nh));
      if (L.qk_norm) {
        qn = load_vector(ckpt_, L.prefix + "self_attn.q_norm.weight", static_cast<size_t>(hd));
        kn = load_vector(ckpt_, L.prefix + "self_attn.k_norm.weight", static_cast<size_t>(hd));
      }
      for (const Block& b : blocks) {
        float* h = hidden.data() + b.row0 * H;
        normed.resize(b.rows * H);
        rms_norm(h, b.rows, H, ln.data(), S.eps, normed.data());
        if (obs) obs->linear_input({&wq.module, &wk.module, &wv.module}, normed.data(), b.rows, H);
        q.resize(b.rows * qdim);
        k.resize(b.rows * kvdim);
        v.resize(b.rows * kvdim);
        apply_linear(wq, normed.data(), b.rows, q.data(), scratch);
        apply_linear(wk, normed.data(), b.rows, k.data(), scratch);
        apply_linear(wv, normed.data(), b.rows, v.data(), scratch);
        if (L.qk_norm) {  // Qwen3: RMSNorm over head_dim per head, before RoPE
          rms_norm(q.data(), b.rows * nh, hd, qn.data(), S.eps, q.data());
          rms_norm(k.data(), b.rows * nkv, hd, kn.data(), S.eps, k.data());
        }
        parallel_for(b.seq0, b.seq1, 1, [&](size_t s0, size_t s1) {
          for (size_t s = s0; s < s1; ++s) {
            const size_t r0 = offsets[s] - b.row0;
            for (size_t p = 0; p < seqs[s].size(); ++p) {
              float* qr = q.data() + (r0 + p) * qdim;
              float* kr = k.data() + (r0 + p) * kvdim;
              if (!L.rope) {
                // Llama-4 NoPE layer: no rotation; the query's temperature grows with position.
                if (L.temperature_tuning) {
                  const float t = llama4_attn_temperature(p, S.floor_scale, S.attn_scale);
                  for (size_t c = 0; c < qdim; ++c) qr[c] *= t;
                }
                continue;
              }
              if (S.rope_interleaved) {
                rope.apply_interleaved(qr, nh, hd, p);
                rope.apply_interleaved(kr, nkv, hd, p);
              } else {
                rope.apply(qr, nh, hd, p);
                rope.apply(kr, nkv, hd, p);
              }
            }
          }
        });
        if (L.l2_qk_norm) {  // Llama-4: L2 norm (RMS, no weight) per head, after RoPE
          rms_norm(q.data(), b.rows * nh, hd, ones.data(), S.eps, q.data());
          rms_norm(k.data(), b.rows * nkv, hd, ones.data(), S.eps, k.data());
        }
        att.resize(b.rows * qdim);
        for (size_t s = b.seq0; s < b.seq1; ++s) {
          const size_t r0 = offsets[s] - b.row0;
          causal_attention(q.data() + r0 * qdim, qdim, k.data() + r0 * kvdim,
                           v.data() + r0 * kvdim, kvdim, seqs[s].size(), nh, nkv, hd, scale,
                           L.sliding_window, att.data() + r0 * qdim, qdim,
                           sinks.empty() ? nullptr : sinks.data(), L.attention_chunk);
        }
        if (obs) obs->linear_input({&wo.module}, att.data(), b.rows, qdim);
        tmp.resize(b.rows * H);
        apply_linear(wo, att.data(), b.rows, tmp.data(), scratch);
        add_inplace(h, tmp.data(), b.rows * H);
      }
    }
    // ---- MLP ----
    const auto ln2 = load_vector(ckpt_, L.prefix + "post_attention_layernorm.weight", H);
    if (!L.moe) {
      const MlpWeights w = load_mlp(ckpt_, L.gate, L.up, L.down, act);
      for (const Block& b : blocks) {
        float* h = hidden.data() + b.row0 * H;
        normed.resize(b.rows * H);
        rms_norm(h, b.rows, H, ln2.data(), S.eps, normed.data());
        tmp.resize(b.rows * H);
        run_mlp(w, normed.data(), b.rows, tmp.data(), obs, g, u, scratch);
        add_inplace(h, tmp.data(), b.rows * H);
      }
    } else {
      const size_t E = L.experts.size();
      const size_t K = static_cast<size_t>(S.top_k);
      std::vector<float> x(T * H);
      rms_norm(hidden.data(), T, H, ln2.data(), S.eps, x.data());
      // Router in float32 (never quantized): softmax over all experts, top-k, optional renorm;
      // gpt-oss: top-k of the logits, softmax over those k; Llama-4: top-k of the logits,
      // sigmoid of each (the experts then read the token scaled by it).
      const bool scaled_input = S.routing == Routing::TopkSigmoidScaledInput;
      std::vector<int32_t> sel(T * K);
      std::vector<float> selw(T * K);
      std::vector<float> logits(T * E);
      {
        const LinearWeights router = load_linear(ckpt_, LinearRef{L.router, "", 0, E, H}, false);
        matmul_nt(x.data(), T, H, router.w.data(), E, logits.data(),
                  router.bias.empty() ? nullptr : router.bias.data());
        parallel_for(0, T, 256, [&](size_t t0, size_t t1) {
          std::vector<float> p(E);
          std::vector<int32_t> idx(E);
          for (size_t t = t0; t < t1; ++t) {
            const float* lg = logits.data() + t * E;
            if (S.routing == Routing::TopkSigmoidScaledInput) {
              std::iota(idx.begin(), idx.end(), 0);
              // torch.topk of the logits; ties keep the lower expert index.
              std::stable_sort(idx.begin(), idx.end(),
                               [&](int32_t a, int32_t b2) { return lg[a] > lg[b2]; });
              for (size_t j = 0; j < K; ++j) {
                sel[t * K + j] = idx[j];
                selw[t * K + j] = 1.0f / (1.0f + std::exp(-lg[idx[j]]));
              }
              continue;
            }
            if (S.routing == Routing::TopkSoftmax) {
              std::iota(idx.begin(), idx.end(), 0);
              // Largest logit first; ties keep the lower expert index.
              std::stable_sort(idx.begin(), idx.end(),
                               [&](int32_t a, int32_t b2) { return lg[a] > lg[b2]; });
              const float top = lg[idx[0]];
              float sum = 0.0f;
              for (size_t j = 0; j < K; ++j) sum += (p[j] = std::exp(lg[idx[j]] - top));
              for (size_t j = 0; j < K; ++j) {
                sel[t * K + j] = idx[j];
                selw[t * K + j] = p[j] / sum;
              }
              continue;
            }
            const float mx = *std::max_element(lg, lg + E);
            float sum = 0.0f;
            for (size_t e = 0; e < E; ++e) sum += (p[e] = std::exp(lg[e] - mx));
            for (size_t e = 0; e < E; ++e) p[e] /= sum;
            std::iota(idx.begin(), idx.end(), 0);
            // Largest probability first; ties keep the lower expert index (torch.topk on CPU).
            std::stable_sort(idx.begin(), idx.end(),
                             [&](int32_t a, int32_t b2) { return p[a] > p[b2]; });
            float wsum = 0.0f;
            for (size_t j = 0; j < K; ++j) wsum += p[idx[j]];
            for (size_t j = 0; j < K; ++j) {
              sel[t * K + j] = idx[j];
              selw[t * K + j] = S.norm_topk ? p[idx[j]] / wsum : p[idx[j]];
            }
          }
        });
      }
      std::vector<float> moe_out(T * H, 0.0f);
      std::vector<float> xin, yout;
      for (size_t e = 0; e < E; ++e) {
        const ExpertRef& X = L.experts[e];
        std::vector<uint32_t> rows;
        std::vector<float> rw;
        for (size_t t = 0; t < T; ++t)
          for (size_t j = 0; j < K; ++j)
            if (sel[t * K + j] == static_cast<int32_t>(e)) {
              rows.push_back(static_cast<uint32_t>(t));
              rw.push_back(selw[t * K + j]);
            }
        if (obs) obs->routed(X.prefix, static_cast<int64_t>(rows.size()));
        if (rows.empty() && !(opt.all_experts && obs)) continue;
        const MlpWeights w = L.bmm_experts ? load_bmm_mlp(ckpt_, S, L, e, act)
                                           : load_mlp(ckpt_, X.gate, X.up, X.down, act);
        if (opt.all_experts && obs) {
          // Every token through the expert (statistics); only routed rows reach the output.
          // Llama-4: each token scaled by sigmoid(its logit for this expert), the score it would
          // carry if routed here (the real score for routed tokens).
          size_t next = 0;  // index into rows (sorted by token)
          for (size_t t0 = 0; t0 < T; t0 += opt.chunk_tokens) {
            const size_t n = std::min(opt.chunk_tokens, T - t0);
            yout.resize(n * H);
            const float* in = x.data() + t0 * H;
            if (scaled_input) {
              xin.resize(n * H);
              for (size_t i = 0; i < n; ++i) {
                const float sc = 1.0f / (1.0f + std::exp(-logits[(t0 + i) * E + e]));
                for (size_t c = 0; c < H; ++c) xin[i * H + c] = in[i * H + c] * sc;
              }
              in = xin.data();
            }
            run_mlp(w, in, n, yout.data(), obs, g, u, scratch);
            while (next < rows.size() && rows[next] < t0 + n) {
              const size_t t = rows[next];
              const float wt = scaled_input ? 1.0f : rw[next];
              const float* y = yout.data() + (t - t0) * H;
              float* o = moe_out.data() + t * H;
              for (size_t c = 0; c < H; ++c) o[c] += y[c] * wt;
              ++next;
            }
          }
        } else {
          for (size_t i0 = 0; i0 < rows.size(); i0 += opt.chunk_tokens) {
            const size_t n = std::min(opt.chunk_tokens, rows.size() - i0);
            xin.resize(n * H);
            for (size_t i = 0; i < n; ++i) {
              const float* src = x.data() + static_cast<size_t>(rows[i0 + i]) * H;
              float* dst = xin.data() + i * H;
              if (scaled_input) {  // Llama-4: the expert reads the token times its score
                const float sc = rw[i0 + i];
                for (size_t c = 0; c < H; ++c) dst[c] = src[c] * sc;
              } else {
                std::copy_n(src, H, dst);
              }
            }
            yout.resize(n * H);
            run_mlp(w, xin.data(), n, yout.data(), obs, g, u, scratch);
            for (size_t i = 0; i < n; ++i) {
              const float wt = scaled_input ? 1.0f : rw[i0 + i];
              const float* y = yout.data() + i * H;
              float* o = moe_out.data() + static_cast<size_t>(rows[i0 + i]) * H;
              for (size_t c = 0; c < H; ++c) o[c] += y[c] * wt;
            }
          }
        }
      }
      if (L.bmm_experts) {  // every expert read: drop the layer's 3-D tensors from memory
        for (const BmmRef* r : {&L.bmm_gate_up, &L.bmm_down})
          for (const std::string& name :
               {r->module, r->module + "_blocks", r->module + "_scales", r->module + "_bias"})
            if (ckpt_.has(name)) ckpt_.release(name);
      }
      if (L.has_shared_expert) {
        const MlpWeights w = load_mlp(ckpt_, L.shared_gate, L.shared_up, L.shared_down, act);
        LinearWeights sg;
        if (!L.shared_expert_gate.empty())
          sg = load_linear(ckpt_, LinearRef{L.shared_expert_gate, "", 0, 1, H}, false);
        std::vector<float> gl;
        for (size_t t0 = 0; t0 < T; t0 += opt.chunk_tokens) {
          const size_t n = std::min(opt.chunk_tokens, T - t0);
          yout.resize(n * H);
          run_mlp(w, x.data() + t0 * H, n, yout.data(), obs, g, u, scratch);
          if (!sg.w.empty()) {
            gl.resize(n);
            matmul_nt(x.data() + t0 * H, n, H, sg.w.data(), 1, gl.data(),
                      sg.bias.empty() ? nullptr : sg.bias.data());
          }
          for (size_t i = 0; i < n; ++i) {
            const float gate = sg.w.empty() ? 1.0f : 1.0f / (1.0f + std::exp(-gl[i]));
            const float* y = yout.data() + i * H;
            float* o = moe_out.data() + (t0 + i) * H;
            for (size_t c = 0; c < H; ++c) o[c] += gate * y[c];
          }
        }
      }
      add_inplace(hidden.data(), moe_out.data(), T * H);
    }
    if (opt.on_layer) opt.on_layer(static_cast<int64_t>(li), static_cast<int64_t>(S.layers.size()));
  }
  if (!sink) return;

  // ---- final norm and lm_head, one sequence at a time ----
  const auto fn = load_vector(ckpt_, S.final_norm, H);
  LinearWeights head;
  if (S.lm_head_tied) {
    head.module = S.lm_head.module;
    head.n = S.lm_head.rows;
    head.k = S.lm_head.cols;
    head.w.resize(head.n * head.k);
    std::vector<int32_t> all(head.n);
    std::iota(all.begin(), all.end(), 0);
    gather_rows(ckpt_, S.embed, all.data(), head.n, H, head.w.data());
  } else {
    head = load_linear(ckpt_, S.lm_head, false);  // lm_head is never quantized at run time
  }
  if (head.k != H) throw Error(ckpt_.dir().string() + ": lm_head width does not match hidden_size");
  std::vector<float> logits;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const size_t n = seqs[s].size();
    normed.resize(n * H);
    rms_norm(hidden.data() + offsets[s] * H, n, H, fn.data(), S.eps, normed.data());
    logits.resize(n * head.n);
    matmul_nt(normed.data(), n, H, head.w.data(), head.n, logits.data(),
              head.bias.empty() ? nullptr : head.bias.data());
    sink(s, logits.data(), n, head.n);
  }
}

std::vector<int32_t> greedy_generate(const Engine& engine, std::vector<int32_t> seq, size_t steps) {
  std::vector<int32_t> out;
  ForwardOptions opt;
  for (size_t i = 0; i < steps; ++i) {
    int32_t next = 0;
    engine.run({seq}, opt, nullptr, [&](size_t, const float* lg, size_t len, size_t vocab) {
      const float* last = lg + (len - 1) * vocab;
      next = static_cast<int32_t>(std::max_element(last, last + vocab) - last);
    });
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

}  // namespace fp4kit::engine
