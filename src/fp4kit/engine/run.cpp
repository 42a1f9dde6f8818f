// The layer loop: embeddings, each layer's blocks in turn (families/), the final norm and lm_head,
// on the engine's backend. Per layer, one block's weights at a time; the hidden states of all
// tokens of all sequences stay in backend memory between layers.
#include "fp4kit/engine/forward.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "fp4kit/engine/blocks/block.hpp"
#include "fp4kit/engine/blocks/moe.hpp"
#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/engine/profile.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine {

std::vector<std::string> layer_tensors(const Checkpoint& ckpt, const ModelSpec& S, size_t li) {
  const std::string& prefix = S.layers[li].prefix;
  const std::vector<std::string>& names = ckpt.tensor_names();  // sorted
  std::vector<std::string> out;
  for (auto it = std::lower_bound(names.begin(), names.end(), prefix);
       it != names.end() && it->compare(0, prefix.size(), prefix) == 0; ++it)
    out.push_back(*it);
  return out;
}

Batch Batch::make(const std::vector<size_t>& lengths, size_t chunk) {
  Batch B;
  B.chunk_tokens = std::max<size_t>(chunk, 1);
  B.offsets.assign(lengths.size() + 1, 0);
  for (size_t s = 0; s < lengths.size(); ++s) B.offsets[s + 1] = B.offsets[s] + lengths[s];
  B.tokens = B.offsets.back();
  Span b;
  for (size_t s = 0; s < lengths.size(); ++s) {
    if (b.rows > 0 && b.rows + lengths[s] > B.chunk_tokens) {
      B.spans.push_back(b);
      b = Span{};
    }
    if (b.rows == 0) {
      b.row0 = B.offsets[s];
      b.seq0 = s;
    }
    b.rows += lengths[s];
    b.seq1 = s + 1;
  }
  if (b.rows > 0) B.spans.push_back(b);
  return B;
}

Engine::Engine(const Checkpoint& ckpt, std::shared_ptr<Backend> backend)
    : ckpt_(ckpt),
      spec_(ModelSpec::from_checkpoint(ckpt)),
      be_(backend ? std::move(backend) : std::shared_ptr<Backend>(make_cpu_backend())) {}

size_t Engine::activation_bytes(size_t tokens, size_t chunk, size_t longest) const {
  const size_t H = static_cast<size_t>(spec_.hidden);
  // The mixer's per-token intermediates: q (and its gate), k, v; or a Gated DeltaNet's
  // q|k|v before and after the convolution, z, the core output, g and beta; or MLA's q and keys
  // [nh, nope + rope], kv_b's output [nh, nope + v], values and the attention output [nh, v], the
  // latent (twice) and the q-LoRA rank.
  size_t qkv = 0;
  if (std::any_of(spec_.layers.begin(), spec_.layers.end(), [](const LayerSpec& L) { return L.mla; })) {
    const MlaDims& m = spec_.mla;
    const auto nh = static_cast<size_t>(spec_.n_heads);
    qkv = nh * static_cast<size_t>(2 * (m.qk_nope + m.qk_rope) + (m.qk_nope + m.v) + 2 * m.v) +
          static_cast<size_t>(2 * m.kv_lora_rank + m.qk_rope + m.q_lora_rank);
  }
  size_t inter = 0;
  for (const auto& L : spec_.layers) {
    if (L.linear_attention) {
      const GdnSpec& G = L.gdn;
      const auto vd = static_cast<size_t>(G.nv * G.dv), c = 2 * static_cast<size_t>(G.nk * G.dk) + vd;
      qkv = std::max(qkv, 2 * c + 2 * vd + 2 * static_cast<size_t>(G.nv));
    } else {
      qkv = std::max<size_t>(qkv, L.q.rows + L.k.rows + L.v.rows);
    }
    inter = std::max<size_t>(inter, L.moe ? L.experts.front().gate.rows : L.gate.rows);
    if (L.has_shared_expert) inter = std::max<size_t>(inter, L.shared_gate.rows);
  }
  const bool any_moe = std::any_of(spec_.layers.begin(), spec_.layers.end(),
                                   [](const LayerSpec& L) { return L.moe; });
  const size_t block = std::max(chunk, longest);
  size_t floats = tokens * H;                          // hidden states
  if (any_moe) floats += 2 * tokens * H + tokens * static_cast<size_t>(spec_.n_experts);
  if (any_moe && be_->concurrent_ops()) {  // experts side by side: their outputs (moe.hpp)
    const auto k = static_cast<size_t>(std::max<int64_t>(spec_.top_k, 1));
    floats += std::min(tokens, std::max(chunk, moe_round_tokens(k, H))) * k * H;
  }
  floats += block * (2 * H + qkv + 4 * inter);         // one block's intermediates
  floats += longest * static_cast<size_t>(spec_.vocab);  // one sequence's logits
  return floats * sizeof(float);
}

size_t Engine::peak_weight_bytes() const {
  auto sz = [](const LinearRef& r) { return static_cast<size_t>(r.rows * r.cols); };
  size_t peak = static_cast<size_t>(spec_.lm_head.rows * spec_.lm_head.cols);
  for (const auto& L : spec_.layers) {
    const GdnSpec& G = L.gdn;
    const size_t attn =
        L.linear_attention
            ? sz(G.qkv) + sz(G.z) + sz(G.b) + sz(G.a) + sz(G.out) +
                  static_cast<size_t>(2 * G.nk * G.dk + G.nv * G.dv) * static_cast<size_t>(G.kernel)
            : sz(L.q) + sz(L.k) + sz(L.v) + sz(L.o) + sz(L.q_a) + sz(L.kv_a) + sz(L.kv_b);
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

struct ForwardPass::Impl {
  const Engine& engine;
  const std::vector<std::vector<int32_t>>& seqs;
  ForwardOptions opt;
  bool logits = false;
  Batch batch;
  Buffer hidden, saved;
};

ForwardPass::ForwardPass(const Engine& engine, const std::vector<std::vector<int32_t>>& seqs,
                         const ForwardOptions& opt, bool logits)
    : impl_(std::make_unique<Impl>(Impl{engine, seqs, opt, logits, {}, {}, {}})) {
  const ModelSpec& S = engine.spec_;
  Backend& be = *engine.be_;
  const Checkpoint& ckpt = engine.ckpt_;
  const size_t H = static_cast<size_t>(S.hidden);
  std::vector<size_t> lengths(seqs.size());
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].empty()) throw Error("engine: empty sequence " + std::to_string(s));
    lengths[s] = seqs[s].size();
  }
  impl_->batch = Batch::make(lengths, opt.chunk_tokens);
  const size_t T = impl_->batch.tokens;
  if (T == 0) return;
  if (!S.layers.empty()) be.prefetch(ckpt, layer_tensors(ckpt, S, 0));
  // The embeddings, in pieces of about 64 MiB gathered on all cores and written into backend
  // memory (no host copy of all T x H floats).
  impl_->hidden = be.alloc(T * H * sizeof(float));
  std::vector<int32_t> ids;
  ids.reserve(T);
  for (const auto& q : seqs) ids.insert(ids.end(), q.begin(), q.end());
  const size_t piece = std::max<size_t>(1, (size_t(64) << 20) / (H * sizeof(float)));
  std::vector<float> h(std::min(T, piece) * H);
  for (size_t r0 = 0; r0 < T; r0 += piece) {
    const size_t n = std::min(piece, T - r0);
    parallel_for(0, n, 64, [&](size_t a, size_t b) {
      gather_rows(ckpt, S.embed, ids.data() + r0 + a, b - a, H, h.data() + a * H);
    });
    be.write(impl_->hidden.f() + r0 * H, h.data(), n * H);
  }
}

ForwardPass::~ForwardPass() = default;

void ForwardPass::run_layer(size_t li, ActivationObserver* obs) {
  const Engine& e = impl_->engine;
  const ModelSpec& S = e.spec_;
  const Checkpoint& ckpt = e.ckpt_;
  Backend& be = *e.be_;
  if (impl_->batch.tokens == 0) return;
  // The next layer's weights (or lm_head after the last) travel while this one computes.
  if (li + 1 < S.layers.size())
    be.prefetch(ckpt, layer_tensors(ckpt, S, li + 1));
  else if (impl_->logits && !S.lm_head_tied && ckpt.has(S.lm_head.module + ".weight"))
    be.prefetch(ckpt, {S.lm_head.module + ".weight"});
  const RunContext ctx{be, impl_->batch, obs, impl_->opt.all_experts};
  for (const BlockLoader& load : layer_blocks(ckpt, S, li, be, impl_->opt.simulate_activations)) {
    std::unique_ptr<Block> block;
    {
      const profile::Scope p("block load (weights decoded)");
      block = load();
    }
    const profile::Scope p("block forward");
    block->forward(ctx, impl_->hidden.f());
  }
}

void ForwardPass::save() {
  Backend& be = *impl_->engine.be_;
  const size_t n = impl_->hidden.floats();
  be.ensure(impl_->saved, n);
  be.copy(impl_->hidden.f(), n, impl_->saved.f());
}

void ForwardPass::restore() {
  if (impl_->saved.empty() && !impl_->hidden.empty())
    throw Error("engine: restore() without save() (internal error)");
  impl_->engine.be_->copy(impl_->saved.f(), impl_->hidden.floats(), impl_->hidden.f());
}

void ForwardPass::finish(const LogitsSink& sink) {
  const Engine& e = impl_->engine;
  const ModelSpec& S = e.spec_;
  Backend& be = *e.be_;
  const Checkpoint& ckpt = e.ckpt_;
  const auto& seqs = impl_->seqs;
  const Batch& batch = impl_->batch;
  const Buffer& hidden = impl_->hidden;
  const size_t H = static_cast<size_t>(S.hidden);
  if (batch.tokens == 0) return;
  const Buffer fn = be.upload(load_vector(ckpt, S.final_norm, H));
  LinearWeights head;
  if (S.lm_head_tied) {
    head.module = S.lm_head.module;
    head.n = S.lm_head.rows;
    head.k = S.lm_head.cols;
    head.w.resize(head.n * head.k);
    std::vector<int32_t> all(head.n);
    std::iota(all.begin(), all.end(), 0);
    gather_rows(ckpt, S.embed, all.data(), head.n, H, head.w.data());
  }
  // lm_head is never quantized at run time
  const Linear lm = S.lm_head_tied ? be.upload(std::move(head)) : be.load_linear(ckpt, S.lm_head, false);
  if (lm.k != H) throw Error(ckpt.dir().string() + ": lm_head width does not match hidden_size");
  Buffer normed, logits;
  std::vector<float> host;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const size_t n = seqs[s].size();
    be.ensure(normed, n * H);
    be.rms_norm(hidden.f() + batch.offsets[s] * H, n, H, fn.f(), S.eps, normed.f(),
                S.norm_one_plus);
    be.ensure(logits, n * lm.n);
    be.gemm(normed.f(), n, H, lm.w.f(), lm.n, logits.f(), lm.bias.empty() ? nullptr : lm.bias.f());
    host.resize(n * lm.n);
    be.download(logits.f(), n * lm.n, host.data());
    sink(s, host.data(), n, lm.n);
  }
}

void Engine::run(const std::vector<std::vector<int32_t>>& seqs, const ForwardOptions& opt,
                 ActivationObserver* obs, const LogitsSink& sink) const {
  ForwardPass pass(*this, seqs, opt, static_cast<bool>(sink));
  const auto n = static_cast<int64_t>(spec_.layers.size());
  for (size_t li = 0; li < spec_.layers.size(); ++li) {
    pass.run_layer(li, obs);
    if (opt.on_layer) opt.on_layer(static_cast<int64_t>(li), n);
  }
  profile::print_and_reset();
  if (sink) pass.finish(sink);
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
