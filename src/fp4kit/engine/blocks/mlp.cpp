// Gated MLPs and the dense MLP block.
#include "fp4kit/engine/blocks/mlp.hpp"

#include "fp4kit/engine/weights.hpp"

namespace fp4kit::engine {

void GatedMlp::run(const RunContext& ctx, const float* x, size_t rows, float* out, Buffer& g,
                   Buffer& u) const {
  Backend& be = ctx.be;
  const size_t I = inter();
  if (kind != Kind::Separate) {
    // One module (the 3-D gate_up_proj) reads x: observed once, not once per half; or gate and
    // up stacked into one linear.
    if (stacked)
      ctx.observe({&gate.module, &up.module}, x, rows, gate.k);
    else
      ctx.observe({&gate.module}, x, rows, gate.k);
    ctx.observe_bmm_expert(gate.module, bmm_expert, x, rows, gate.k);
    be.ensure(u, rows * 2 * I);
    be.ensure(g, rows * I);
    be.linear(gate, x, rows, u.f());
    if (kind == Kind::FusedInterleaved)
      be.clamped_swiglu_interleaved(u.f(), rows, I, alpha, limit, g.f());
    else
      be.silu_glu_split(u.f(), rows, I, g.f());
  } else {
    ctx.observe({&gate.module, &up.module}, x, rows, gate.k);
    be.ensure(g, rows * I);
    be.ensure(u, rows * I);
    be.linear(gate, x, rows, g.f());
    be.linear(up, x, rows, u.f());
    be.silu_mul(g.f(), u.f(), rows * I);
  }
  ctx.observe({&down.module}, g.f(), rows, I);
  ctx.observe_bmm_expert(down.module, bmm_expert, g.f(), rows, I);
  be.linear(down, g.f(), rows, out);
}

GatedMlp load_gated_mlp(const Checkpoint& c, const LinearRef& g, const LinearRef& u,
                        const LinearRef& d, Backend& be, bool act) {
  GatedMlp m;
  m.gate = be.load_linear_pair(c, g, u, act);
  if (!m.gate.w.empty()) {
    m.kind = GatedMlp::Kind::FusedSplit;  // silu(first I) * (last I)
    m.stacked = true;
    m.up.module = u.module;
    m.up.n = u.rows;
    m.up.k = u.cols;
  } else {
    m.gate = be.load_linear(c, g, act);
    m.up = be.load_linear(c, u, act);
  }
  m.down = be.load_linear(c, d, act);
  return m;
}

void DenseMlpBlock::forward(const RunContext& ctx, float* hidden) {
  Backend& be = ctx.be;
  const size_t H = hidden_;
  for (const Batch::Span& b : ctx.batch.spans) {
    float* h = hidden + b.row0 * H;
    be.ensure(normed_, b.rows * H);
    be.rms_norm(h, b.rows, H, norm_.f(), eps_, normed_.f(), one_plus_);
    be.ensure(out_, b.rows * H);
    mlp_.run(ctx, normed_.f(), b.rows, out_.f(), g_, u_);
    be.add(h, out_.f(), b.rows * H);
  }
}

std::unique_ptr<Block> load_dense_mlp(const Checkpoint& ckpt, const ModelSpec& S,
                                      const LayerSpec& L, Backend& be, bool act) {
  const auto H = static_cast<size_t>(S.hidden);
  Buffer norm = be.upload(load_vector(ckpt, L.prefix + "post_attention_layernorm.weight", H));
  return std::make_unique<DenseMlpBlock>(H, S.eps, std::move(norm),
                                         load_gated_mlp(ckpt, L.gate, L.up, L.down, be, act),
                                         S.norm_one_plus);
}

}  // namespace fp4kit::engine
