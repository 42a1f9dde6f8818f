// The mixture-of-experts block (Qwen2/3-MoE, Mixtral, gpt-oss, Llama-4 feed_forward).
#include "fp4kit/engine/blocks/moe.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "fp4kit/engine/profile.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine {

size_t moe_round_tokens(size_t top_k, size_t hidden) {
  constexpr size_t kBytes = size_t(512) << 20;
  return std::max<size_t>(1, kBytes / (std::max<size_t>(top_k, 1) * hidden * sizeof(float)));
}

void MoeBlock::forward(const RunContext& ctx, float* hidden) {
  const profile::Scope whole("moe: whole block forward");
  Backend& be = ctx.be;
  const size_t H = cfg_.hidden, T = ctx.batch.tokens, E = w_.expert_names.size();
  const size_t chunk = std::max<size_t>(ctx.batch.chunk_tokens, 1);
  const bool scaled = cfg_.scaled_input;
  const bool all = ctx.all_experts && ctx.obs != nullptr;
  std::optional<profile::Scope> ph(std::in_place, "moe: norm, router logits");
  Buffer x = be.alloc(T * H * sizeof(float));
  be.rms_norm(hidden, T, H, w_.norm.f(), cfg_.eps, x.f(), cfg_.norm_one_plus);
  Buffer logits = be.alloc(T * E * sizeof(float));
  be.linear(w_.router, x.f(), T, logits.f());
  RouterOptions ro = cfg_.router;
  if (!w_.selection_bias.empty()) ro.selection_bias = w_.selection_bias.f();
  ph.emplace("moe: route");
  // Each expert's tokens (in token order) and routing weights, in backend memory.
  const ExpertGroups groups = be.route_grouped(logits.f(), T, E, ro);
  std::vector<float> host_logits;  // Llama-4 all-experts: every token's score for each expert
  if (all && scaled) {
    host_logits.resize(T * E);
    be.download(logits.f(), T * E, host_logits.data());
  }
  logits = Buffer();

  ph.emplace("moe: experts");
  Buffer out = be.alloc(T * H * sizeof(float));
  be.fill(out.f(), T * H, 0.0f);
  for (size_t e = 0; e < E; ++e)
    if (ctx.obs) ctx.obs->routed(w_.expert_names[e], static_cast<int64_t>(groups.count(e)));
  const bool concurrent = !all && be.concurrent_ops() &&
                          (!ctx.obs || (ctx.obs->concurrent() && !w_.shared_module_names));
  if (concurrent) {
    // Few tokens per expert make small products: experts run side by side, one task per expert
    // (weights decoded, products over all its tokens as single-threaded sgemms), largest first,
    // each thread taking the next expert when it is done. Each expert writes its outputs to its
    // own rows of `y`; they are added to the layer output in expert order afterwards, and each
    // expert's statistics are its own, so the bytes do not depend on the thread count or on the
    // order the experts finish in. `y` holds k rows per token: rounds of at most
    // moe_round_tokens(k, H) tokens bound it. (A concurrent backend's memory is host memory: the
    // grouped rows are read here directly.)
    const size_t R = std::max(chunk, moe_round_tokens(groups.k, H));
    std::vector<size_t> first(E), count(E), offset(E + 1), order;
    for (size_t t0 = 0; t0 < T; t0 += R) {
      const size_t t1 = std::min(T, t0 + R);
      // This round's rows of each expert: a range of its rows (sorted by token).
      order.clear();
      for (size_t e = 0; e < E; ++e) {
        const uint32_t* r = groups.rows_of(e);
        const size_t n = groups.count(e);
        first[e] = static_cast<size_t>(std::lower_bound(r, r + n, t0) - r);
        count[e] = static_cast<size_t>(std::lower_bound(r, r + n, t1) - r) - first[e];
        offset[e + 1] = offset[e] + count[e];
        if (count[e] > 0) order.push_back(e);
      }
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return count[a] > count[b]; });
      Buffer y = be.alloc(std::max<size_t>(offset[E], 1) * H * sizeof(float));
      std::optional<profile::Scope> tasks_wall(std::in_place, "moe: expert tasks (wall)");
      parallel_tasks(order.size(), [&](size_t i) {
        const size_t e = order[i];
        const uint32_t* rows = groups.rows_of(e) + first[e];
        const float* rw = groups.weight_of(e) + first[e];
        std::optional<profile::Scope> load_time(std::in_place, "moe: expert load (thread sum)");
        const GatedMlp mlp = w_.load_expert(e);
        load_time.reset();
        const profile::Scope run_time("moe: expert products (thread sum)");
        Buffer xin, g, u;
        for (size_t i0 = 0; i0 < count[e]; i0 += chunk) {
          const size_t n = std::min(chunk, count[e] - i0);
          be.ensure(xin, n * H);
          be.gather_rows(x.f(), H, rows + i0, n, scaled ? rw + i0 : nullptr, xin.f());
          mlp.run(ctx, xin.f(), n, y.f() + (offset[e] + i0) * H, g, u);
        }
      });
      tasks_wall.reset();
      const profile::Scope combine("moe: outputs added");
      for (size_t e = 0; e < E; ++e)
        if (count[e] > 0)
          be.scatter_add_rows(out.f(), H, groups.rows_of(e) + first[e], count[e],
                              y.f() + offset[e] * H, nullptr,
                              scaled ? nullptr : groups.weight_of(e) + first[e]);
    }
  }
  // The all-experts path reads each expert's rows on the host (every token runs, the routed ones
  // are picked out); index arrays it builds go to the backend per chunk.
  std::vector<uint32_t> host_rows;
  if (all) {
    host_rows.resize(T * groups.k);
    std::vector<float> bits(host_rows.size());
    be.download(reinterpret_cast<const float*>(groups.rows.as<uint32_t>()), bits.size(),
                bits.data());
    if (!bits.empty()) std::memcpy(host_rows.data(), bits.data(), bits.size() * sizeof(float));
  }
  Buffer xin, yout, g, u;
  std::vector<uint32_t> idx;
  std::vector<float> sc;
  for (size_t e = 0; e < E && !concurrent; ++e) {
    const size_t count = groups.count(e);
    const uint32_t* rows = groups.rows_of(e);  // backend memory
    const float* rw = groups.weight_of(e);     // backend memory
    if (count == 0 && !all) continue;
    std::optional<profile::Scope> pe(std::in_place, "moe: expert load");
    const GatedMlp mlp = w_.load_expert(e);
    pe.reset();
    if (all) {
      // Every token through the expert (statistics); only routed rows reach the output.
      // Llama-4: each token scaled by sigmoid(its logit for this expert), the score it would
      // carry if routed here (the real score for routed tokens).
      const uint32_t* hrows = host_rows.data() + groups.offset[e];
      size_t next = 0;  // index into this expert's rows (sorted by token)
      for (size_t t0 = 0; t0 < T; t0 += chunk) {
        const size_t n = std::min(chunk, T - t0);
        be.ensure(yout, n * H);
        const float* in = x.f() + t0 * H;
        if (scaled) {
          idx.resize(n);
          sc.resize(n);
          for (size_t i = 0; i < n; ++i) {
            idx[i] = static_cast<uint32_t>(t0 + i);
            sc[i] = 1.0f / (1.0f + std::exp(-host_logits[(t0 + i) * E + e]));
          }
          be.ensure(xin, n * H);
          const Buffer di = be.upload_u32(idx), ds = be.upload(std::vector<float>(sc));
          be.gather_rows(x.f(), H, di.as<uint32_t>(), n, ds.f(), xin.f());
          in = xin.f();
        }
        mlp.run(ctx, in, n, yout.f(), g, u);
        const size_t first = next;
        idx.clear();
        while (next < count && hrows[next] < t0 + n) idx.push_back(hrows[next++] - t0);
        if (next > first) {
          const Buffer di = be.upload_u32(idx);
          be.scatter_add_rows(out.f(), H, rows + first, next - first, yout.f(),
                              di.as<uint32_t>(), scaled ? nullptr : rw + first);
        }
      }
    } else {
      for (size_t i0 = 0; i0 < count; i0 += chunk) {
        const size_t n = std::min(chunk, count - i0);
        pe.emplace("moe: gather");
        be.ensure(xin, n * H);
        be.gather_rows(x.f(), H, rows + i0, n, scaled ? rw + i0 : nullptr, xin.f());
        be.ensure(yout, n * H);
        pe.emplace("moe: expert mlp (+stats)");
        mlp.run(ctx, xin.f(), n, yout.f(), g, u);
        pe.emplace("moe: scatter");
        be.scatter_add_rows(out.f(), H, rows + i0, n, yout.f(), nullptr,
                            scaled ? nullptr : rw + i0);
      }
    }
  }
  ph.emplace("moe: shared expert, add");
  if (w_.release_experts) w_.release_experts();
  if (w_.load_shared) {
    const GatedMlp shared = w_.load_shared();
    Buffer gl;
    const bool gated = !w_.shared_gate.w.empty();
    for (size_t t0 = 0; t0 < T; t0 += chunk) {
      const size_t n = std::min(chunk, T - t0);
      be.ensure(yout, n * H);
      shared.run(ctx, x.f() + t0 * H, n, yout.f(), g, u);
      if (gated) {
        be.ensure(gl, n);
        be.linear(w_.shared_gate, x.f() + t0 * H, n, gl.f());
        be.sigmoid(gl.f(), n);
      }
      be.add_rows_scaled(out.f() + t0 * H, yout.f(), n, H, gated ? gl.f() : nullptr);
    }
  }
  be.add(hidden, out.f(), T * H);
}

std::unique_ptr<Block> load_moe(const Checkpoint& ckpt, const ModelSpec& S, const LayerSpec& L,
                                Backend& be, bool act) {
  const auto H = static_cast<size_t>(S.hidden);
  const size_t E = L.experts.size();
  MoeConfig c;
  c.hidden = H;
  c.eps = S.eps;
  c.norm_one_plus = S.norm_one_plus;
  c.router.top_k = static_cast<size_t>(S.top_k);
  c.router.norm_topk = S.norm_topk;
  switch (S.routing) {
    case Routing::SoftmaxTopk:
      c.router.kind = RouterKind::SoftmaxTopk;
      c.router.scaling = S.routed_scaling;
      break;
    case Routing::TopkSoftmax: c.router.kind = RouterKind::TopkSoftmax; break;
    case Routing::SigmoidGroupTopk:
    case Routing::SoftmaxGroupTopk:
      c.router.kind = S.routing == Routing::SigmoidGroupTopk ? RouterKind::SigmoidGroupTopk
                                                             : RouterKind::SoftmaxGroupTopk;
      c.router.n_group = static_cast<size_t>(S.n_group);
      c.router.topk_group = static_cast<size_t>(S.topk_group);
      c.router.scaling = S.routed_scaling;
      break;
    case Routing::TopkSigmoidScaledInput:
      c.router.kind = RouterKind::TopkSigmoid;
      c.scaled_input = true;
      break;
  }
  MoeWeights w;
  w.norm = be.upload(load_vector(ckpt, L.prefix + "post_attention_layernorm.weight", H));
  w.router = be.load_linear(ckpt, LinearRef{L.router, "", 0, E, H}, false);
  w.router.exact = true;  // routing decisions as the CPU engine's, whatever the backend's math
  if (S.routing == Routing::SigmoidGroupTopk && ckpt.has(L.router + ".e_score_correction_bias"))
    w.selection_bias = be.upload(load_vector(ckpt, L.router + ".e_score_correction_bias", E));
  for (const ExpertRef& x : L.experts) w.expert_names.push_back(x.prefix);
  if (L.bmm_experts) {
    w.shared_module_names = true;
    w.load_expert = [&ckpt, &S, &L, &be, act](size_t e) {
      GatedMlp m;
      m.gate = be.load_bmm_expert(ckpt, L.bmm_gate_up, e, act);
      m.down = be.load_bmm_expert(ckpt, L.bmm_down, e, act);
      m.kind = L.bmm_interleaved ? GatedMlp::Kind::FusedInterleaved : GatedMlp::Kind::FusedSplit;
      m.alpha = S.swiglu_alpha;
      m.limit = S.swiglu_limit;
      m.bmm_expert = static_cast<int64_t>(e);
      return m;
    };
    // Every expert read: drop the layer's 3-D tensors from memory.
    w.release_experts = [&ckpt, &L] {
      for (const BmmRef* r : {&L.bmm_gate_up, &L.bmm_down})
        for (const std::string& name :
             {r->module, r->module + "_blocks", r->module + "_scales", r->module + "_bias"})
          if (ckpt.has(name)) ckpt.release(name);
    };
  } else {
    w.load_expert = [&ckpt, &L, &be, act](size_t e) {
      const ExpertRef& x = L.experts[e];
      return load_gated_mlp(ckpt, x.gate, x.up, x.down, be, act);
    };
  }
  if (L.has_shared_expert) {
    w.load_shared = [&ckpt, &L, &be, act] {
      return load_gated_mlp(ckpt, L.shared_gate, L.shared_up, L.shared_down, be, act);
    };
    if (!L.shared_expert_gate.empty())
      w.shared_gate =
          be.load_linear(ckpt, LinearRef{L.shared_expert_gate, "", 0, 1, H}, false);
  }
  return std::make_unique<MoeBlock>(c, std::move(w));
}

}  // namespace fp4kit::engine
