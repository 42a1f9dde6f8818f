// The Gated DeltaNet block (transformers' Qwen3NextGatedDeltaNet / Qwen3_5MoeGatedDeltaNet).
#include "fp4kit/engine/blocks/gated_delta_net.hpp"

#include <fmt/format.h>

#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"

namespace fp4kit::engine {

GatedDeltaNetBlock::GatedDeltaNetBlock(const GdnConfig& cfg, GdnWeights w)
    : cfg_(cfg), w_(std::move(w)) {
  for (const std::string& m : w_.in_modules) in_ptrs_.push_back(&m);
}

void GatedDeltaNetBlock::forward(const RunContext& ctx, float* hidden) {
  Backend& be = ctx.be;
  const size_t H = cfg_.hidden;
  const size_t kd = static_cast<size_t>(cfg_.nk) * cfg_.dk, vd = static_cast<size_t>(cfg_.nv) * cfg_.dv;
  const size_t C = 2 * kd + vd, nv = static_cast<size_t>(cfg_.nv);
  for (const Batch::Span& sp : ctx.batch.spans) {
    const size_t rows = sp.rows;
    float* h = hidden + sp.row0 * H;
    be.ensure(normed_, rows * H);
    be.rms_norm(h, rows, H, w_.norm.f(), cfg_.eps, normed_.f(), cfg_.norm_one_plus);
    ctx.observe(in_ptrs_, normed_.f(), rows, H);
    be.ensure(mixed_, rows * C);
    be.ensure(z_, rows * vd);
    be.ensure(b_, rows * nv);
    be.ensure(a_, rows * nv);
    be.linear(w_.qkv, normed_.f(), rows, mixed_.f());
    be.linear(w_.z, normed_.f(), rows, z_.f());
    be.linear(w_.b, normed_.f(), rows, b_.f());
    be.linear(w_.a, normed_.f(), rows, a_.f());
    be.gdn_gates(a_.f(), b_.f(), rows, nv, w_.A_log.f(), w_.dt_bias.f());  // a: g, b: beta
    be.ensure(conv_, rows * C);
    be.ensure(core_, rows * vd);
    for (size_t s = sp.seq0; s < sp.seq1; ++s) {
      const size_t r0 = ctx.batch.offsets[s] - sp.row0, len = ctx.batch.length(s);
      float* cv = conv_.f() + r0 * C;
      be.causal_conv1d_silu(mixed_.f() + r0 * C, len, C, C, w_.conv.f(),
                            static_cast<size_t>(cfg_.kernel), cv);
      be.gated_delta_rule(cv, cv + kd, C, cv + 2 * kd, C, a_.f() + r0 * nv, b_.f() + r0 * nv, len,
                          cfg_.nk, cfg_.nv, cfg_.dk, cfg_.dv, cfg_.chunked, core_.f() + r0 * vd);
    }
    // Gated RMSNorm per value head (plain weight), then * silu(z): z <- silu(z) * normed core.
    be.rms_norm(core_.f(), rows * nv, static_cast<size_t>(cfg_.dv), w_.gate_norm.f(), cfg_.eps,
                core_.f());
    be.silu_mul(z_.f(), core_.f(), rows * vd);
    ctx.observe({&w_.out.module}, z_.f(), rows, vd);
    be.ensure(out_, rows * H);
    be.linear(w_.out, z_.f(), rows, out_.f());
    be.add(h, out_.f(), rows * H);
  }
}

std::unique_ptr<Block> load_gated_delta_net(const Checkpoint& ckpt, const ModelSpec& S,
                                            const LayerSpec& L, Backend& be, bool act) {
  const GdnSpec& G = L.gdn;
  GdnConfig c;
  c.hidden = static_cast<size_t>(S.hidden);
  c.eps = S.eps;
  c.norm_one_plus = S.norm_one_plus;
  c.nk = G.nk;
  c.nv = G.nv;
  c.dk = G.dk;
  c.dv = G.dv;
  c.kernel = G.kernel;
  const size_t nk = static_cast<size_t>(G.nk), nv = static_cast<size_t>(G.nv);
  const size_t dk = static_cast<size_t>(G.dk), dv = static_cast<size_t>(G.dv);
  const size_t kd = nk * dk, vd = nv * dv, C = 2 * kd + vd;
  GdnWeights w;
  w.norm = be.upload(load_vector(ckpt, L.prefix + "input_layernorm.weight", c.hidden));
  if (G.grouped) {
    // in_proj_qkvz rows per key head g: q_g (dk), k_g (dk), v_g (r dv), z_g (r dv);
    // in_proj_ba rows per g: b_g (r), a_g (r). De-grouped: [q all; k all; v all], z, b, a.
    const size_t r = nv / nk, gw = 2 * dk + 2 * r * dv;
    const Linear qkvz = be.load_linear(ckpt, G.qkv, act);
    const Linear ba = be.load_linear(ckpt, G.b, act);
    std::vector<size_t> q, k, v, z, b, a;
    for (size_t g = 0; g < nk; ++g) {
      for (size_t i = 0; i < dk; ++i) q.push_back(g * gw + i);
      for (size_t i = 0; i < dk; ++i) k.push_back(g * gw + dk + i);
      for (size_t i = 0; i < r * dv; ++i) v.push_back(g * gw + 2 * dk + i);
      for (size_t i = 0; i < r * dv; ++i) z.push_back(g * gw + 2 * dk + r * dv + i);
      for (size_t i = 0; i < r; ++i) b.push_back(g * 2 * r + i);
      for (size_t i = 0; i < r; ++i) a.push_back(g * 2 * r + r + i);
    }
    q.insert(q.end(), k.begin(), k.end());
    q.insert(q.end(), v.begin(), v.end());
    w.qkv = be.take_rows(qkvz, q);
    w.z = be.take_rows(qkvz, z);
    w.b = be.take_rows(ba, b);
    w.a = be.take_rows(ba, a);
    w.in_modules = {G.qkv.module, G.b.module};
  } else {
    w.qkv = be.load_linear(ckpt, G.qkv, act);
    w.z = be.load_linear(ckpt, G.z, act);
    w.b = be.load_linear(ckpt, G.b, act);
    w.a = be.load_linear(ckpt, G.a, act);
    w.in_modules = {G.qkv.module, G.z.module, G.b.module, G.a.module};
  }
  if (w.qkv.n != C || w.z.n != vd || w.b.n != nv || w.a.n != nv)
    throw Error(fmt::format("{}: linear attention projections of {} do not match the config's "
                            "heads ({} key heads of {}, {} value heads of {})",
                            ckpt.dir().string(), L.prefix, nk, dk, nv, dv));
  // conv1d.weight [C, 1, K] holds C * K values in [C, K] order.
  w.conv = be.upload(load_vector(ckpt, G.conv, C * static_cast<size_t>(G.kernel)));
  w.A_log = be.upload(load_vector(ckpt, G.A_log, nv));
  w.dt_bias = be.upload(load_vector(ckpt, G.dt_bias, nv));
  w.gate_norm = be.upload(load_vector(ckpt, G.norm, dv));
  w.out = be.load_linear(ckpt, G.out, act);
  return std::make_unique<GatedDeltaNetBlock>(c, std::move(w));
}

}  // namespace fp4kit::engine
