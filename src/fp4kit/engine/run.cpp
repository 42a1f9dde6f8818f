// The layer loop: embeddings, each layer's blocks in turn (families/), the final norm and lm_head,
// on the engine's backend. Each layer runs over groups of whole sequences (batch_groups), one
// after another. Resident mode: per layer one block's weights at a time, run over every group;
// the hidden states of all tokens stay in backend memory. Host-held mode: the hidden states stay
// in host memory; per layer all its blocks are loaded, then each group is written into backend
// memory, run through them and read back. Every group sees the same ops in both modes, and each
// module's statistics arrive in group order in both, so the numbers are the same bytes.
#include "fp4kit/engine/forward.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

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

std::vector<BatchGroup> batch_groups(const Batch& b, size_t group_tokens) {
  const size_t G = std::max<size_t>(group_tokens, 1);
  std::vector<BatchGroup> out;
  for (size_t i = 0; i < b.spans.size();) {
    size_t j = i, rows = 0;
    while (j < b.spans.size() && (j == i || rows + b.spans[j].rows <= G)) rows += b.spans[j++].rows;
    BatchGroup g;
    g.row0 = b.spans[i].row0;
    g.seq0 = b.spans[i].seq0;
    Batch& sub = g.batch;
    sub.chunk_tokens = b.chunk_tokens;
    sub.tokens = rows;
    const size_t q0 = b.spans[i].seq0, q1 = b.spans[j - 1].seq1;
    for (size_t q = q0; q <= q1; ++q) sub.offsets.push_back(b.offsets[q] - g.row0);
    for (size_t k = i; k < j; ++k) {
      Batch::Span sp = b.spans[k];
      sp.row0 -= g.row0;
      sp.seq0 -= q0;
      sp.seq1 -= q0;
      sub.spans.push_back(sp);
    }
    out.push_back(std::move(g));
    i = j;
  }
  return out;
}

Engine::Engine(const Checkpoint& ckpt, std::shared_ptr<Backend> backend)
    : ckpt_(ckpt),
      spec_(ModelSpec::from_checkpoint(ckpt)),
      be_(backend ? std::move(backend) : std::shared_ptr<Backend>(make_cpu_backend())) {}

size_t Engine::group_tokens(size_t chunk) const {
  chunk = std::max<size_t>(chunk, 1);
  const bool any_moe = std::any_of(spec_.layers.begin(), spec_.layers.end(),
                                   [](const LayerSpec& L) { return L.moe; });
  if (!any_moe) return chunk;
  const auto k = static_cast<size_t>(std::max<int64_t>(spec_.top_k, 1));
  return std::max(chunk, moe_round_tokens(k, static_cast<size_t>(spec_.hidden)));
}

size_t Engine::activation_bytes(size_t tokens, size_t chunk, size_t longest, bool host_held,
                                size_t group) const {
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
  // The rows of one group: spans of at most the group's tokens, or one longer span.
  const size_t rows = std::min(tokens, std::max(group > 0 ? group : group_tokens(chunk), block));
  // hidden states: all, or two groups' windows (one computes while the other moves)
  size_t floats = (host_held ? 2 * rows : tokens) * H;
  if (any_moe) floats += 2 * rows * H + rows * static_cast<size_t>(spec_.n_experts);
  if (any_moe && be_->concurrent_ops()) {  // experts side by side: their outputs (moe.hpp)
    const auto k = static_cast<size_t>(std::max<int64_t>(spec_.top_k, 1));
    floats += std::min(rows, std::max(chunk, moe_round_tokens(k, H))) * k * H;
  }
  floats += block * (2 * H + qkv + 4 * inter);         // one block's intermediates
  floats += longest * static_cast<size_t>(spec_.vocab);  // one sequence's logits
  return floats * sizeof(float);
}

size_t Engine::peak_weight_bytes(bool host_held) const {
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
    peak = std::max(peak, host_held ? attn + mlp : std::max(attn, mlp));
  }
  return peak * sizeof(float);
}

struct ForwardPass::Impl {
  const Engine& engine;
  const std::vector<std::vector<int32_t>>& seqs;
  ForwardOptions opt;
  bool logits = false;
  Batch batch;
  std::vector<BatchGroup> groups;
  size_t H = 0;
  Buffer hidden, saved;  // resident: [tokens, hidden] in backend memory
  // host-held: [tokens, hidden] in host memory (finish(): one group at a time in `window`)
  std::unique_ptr<float[]> host, host_saved;
  Buffer window;
  // host-held layers: groups move through two windows, group g+1 uploaded and group g-1 read
  // back while group g computes (a device backend's copy stream; made at the first layer)
  std::unique_ptr<GroupMover> mover;

  bool host_held() const { return opt.host_activations; }
  // Group g's rows in backend memory: resident, a pointer into `hidden`; host-held, `window`
  // after the group's rows are written into it.
  float* enter(size_t g) {
    const BatchGroup& G = groups[g];
    if (!host_held()) return hidden.f() + G.row0 * H;
    Backend& be = *engine.be_;
    be.ensure(window, G.batch.tokens * H);
    be.write(window.f(), host.get() + G.row0 * H, G.batch.tokens * H);
    return window.f();
  }
};

ForwardPass::ForwardPass(const Engine& engine, const std::vector<std::vector<int32_t>>& seqs,
                         const ForwardOptions& opt, bool logits)
    : impl_(std::make_unique<Impl>(Impl{engine, seqs, opt, logits, {}, {}, 0, {}, {}, {}, {}, {}, {}})) {
  const ModelSpec& S = engine.spec_;
  Backend& be = *engine.be_;
  const Checkpoint& ckpt = engine.ckpt_;
  const size_t H = static_cast<size_t>(S.hidden);
  impl_->H = H;
  std::vector<size_t> lengths(seqs.size());
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].empty()) throw Error("engine: empty sequence " + std::to_string(s));
    lengths[s] = seqs[s].size();
  }
  impl_->batch = Batch::make(lengths, opt.chunk_tokens);
  impl_->groups = batch_groups(
      impl_->batch, opt.group_tokens > 0 ? opt.group_tokens : engine.group_tokens(opt.chunk_tokens));
  const size_t T = impl_->batch.tokens;
  if (T == 0) return;
  if (!S.layers.empty()) be.prefetch(ckpt, layer_tensors(ckpt, S, 0));
  const profile::Scope pe("embeddings (gather, write)");
  std::vector<int32_t> ids;
  ids.reserve(T);
  for (const auto& q : seqs) ids.insert(ids.end(), q.begin(), q.end());
  if (impl_->host_held()) {  // the embeddings straight into host memory
    impl_->host.reset(new float[T * H]);
    float* h = impl_->host.get();
    parallel_for(0, T, 64, [&](size_t a, size_t b) {
      gather_rows(ckpt, S.embed, ids.data() + a, b - a, H, h + a * H);
    });
    return;
  }
  // The embeddings, in pieces of about 64 MiB gathered on all cores and written into backend
  // memory (no host copy of all T x H floats).
  impl_->hidden = be.alloc(T * H * sizeof(float));
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
  Impl& I = *impl_;
  const Engine& e = I.engine;
  const ModelSpec& S = e.spec_;
  const Checkpoint& ckpt = e.ckpt_;
  Backend& be = *e.be_;
  if (I.batch.tokens == 0) return;
  // The next layer's weights (or lm_head after the last) travel while this one computes.
  if (li + 1 < S.layers.size())
    be.prefetch(ckpt, layer_tensors(ckpt, S, li + 1));
  else if (I.logits && !S.lm_head_tied && ckpt.has(S.lm_head.module + ".weight"))
    be.prefetch(ckpt, {S.lm_head.module + ".weight"});
  auto load = [](const BlockLoader& loader) {
    const profile::Scope p("block load (weights decoded)");
    return loader();
  };
  const std::vector<BlockLoader> loaders =
      layer_blocks(ckpt, S, li, be, I.opt.simulate_activations);
  // A backend that keeps column statistics in its memory brings them to the host once, when
  // the layer is done.
  std::optional<ColumnStatsSlots> slots;
  if (obs && obs->wants_column_stats() && be.defers_column_stats()) slots.emplace(be);
  ColumnStatsSlots* sp = slots ? &*slots : nullptr;
  if (!I.host_held()) {
    for (const BlockLoader& loader : loaders) {
      const std::unique_ptr<Block> block = load(loader);
      const profile::Scope p("block forward");
      for (size_t g = 0; g < I.groups.size(); ++g)
        block->forward(RunContext{be, I.groups[g].batch, obs, I.opt.all_experts, sp},
                       I.enter(g));
    }
    if (slots) slots->flush(*obs);
    return;
  }
  std::vector<std::unique_ptr<Block>> blocks;
  for (const BlockLoader& loader : loaders) blocks.push_back(load(loader));
  if (!I.mover) {
    size_t most = 0;
    for (const BatchGroup& G : I.groups) most = std::max(most, G.batch.tokens);
    I.mover = be.group_mover(most * I.H);
  }
  GroupMover& mv = *I.mover;
  const auto rows_of = [&](size_t g) { return I.host.get() + I.groups[g].row0 * I.H; };
  const auto floats_of = [&](size_t g) { return I.groups[g].batch.tokens * I.H; };
  const size_t n_groups = I.groups.size();
  {
    const profile::Scope p("host-held group written");
    mv.upload(0, rows_of(0), floats_of(0));
  }
  for (size_t g = 0; g < n_groups; ++g) {
    const int w = static_cast<int>(g % 2);
    if (g + 1 < n_groups) {  // the next group travels into the other window meanwhile
      const profile::Scope p("host-held group written");
      mv.upload(1 - w, rows_of(g + 1), floats_of(g + 1));
    }
    float* h = mv.enter(w);
    {
      const profile::Scope p("block forward");
      for (const std::unique_ptr<Block>& block : blocks)
        block->forward(RunContext{be, I.groups[g].batch, obs, I.opt.all_experts, sp}, h);
    }
    const profile::Scope p("host-held group read back");
    mv.download(w, rows_of(g), floats_of(g));
    if (g > 0) mv.settle(1 - w);  // group g-1's rows are in host memory
  }
  {
    const profile::Scope p("host-held group read back");
    mv.finish();  // every group's rows are in host memory before the layer ends
  }
  if (slots) slots->flush(*obs);
}

void ForwardPass::save() {
  Impl& I = *impl_;
  if (I.host_held()) {
    const size_t n = I.batch.tokens * I.H;
    if (!I.host_saved) I.host_saved.reset(new float[n]);
    std::copy(I.host.get(), I.host.get() + n, I.host_saved.get());
    return;
  }
  Backend& be = *I.engine.be_;
  const size_t n = I.hidden.floats();
  be.ensure(I.saved, n);
  be.copy(I.hidden.f(), n, I.saved.f());
}

void ForwardPass::restore() {
  Impl& I = *impl_;
  if (I.host_held()) {
    if (!I.host_saved && I.host) throw Error("engine: restore() without save() (internal error)");
    std::copy(I.host_saved.get(), I.host_saved.get() + I.batch.tokens * I.H, I.host.get());
    return;
  }
  if (I.saved.empty() && !I.hidden.empty())
    throw Error("engine: restore() without save() (internal error)");
  I.engine.be_->copy(I.saved.f(), I.hidden.floats(), I.hidden.f());
}

void ForwardPass::finish(const LogitsSink& sink) {
  Impl& I = *impl_;
  const Engine& e = I.engine;
  const ModelSpec& S = e.spec_;
  Backend& be = *e.be_;
  const Checkpoint& ckpt = e.ckpt_;
  const size_t H = I.H;
  if (I.batch.tokens == 0) return;
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
  I.mover.reset();  // the layers' two windows, back to the backend before `window` is made
  // One sequence at a time, group by group (host-held: each group written into backend memory).
  for (size_t g = 0; g < I.groups.size(); ++g) {
    const Batch& sub = I.groups[g].batch;
    const float* h = I.enter(g);
    const size_t first = I.groups[g].seq0;
    for (size_t q = 0; q < sub.sequences(); ++q) {
      const size_t n = sub.length(q);
      be.ensure(normed, n * H);
      be.rms_norm(h + sub.offsets[q] * H, n, H, fn.f(), S.eps, normed.f(), S.norm_one_plus);
      be.ensure(logits, n * lm.n);
      be.gemm(normed.f(), n, H, lm.w.f(), lm.n, logits.f(),
              lm.bias.empty() ? nullptr : lm.bias.f());
      host.resize(n * lm.n);
      be.download(logits.f(), n * lm.n, host.data());
      sink(first + q, host.data(), n, lm.n);
    }
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
