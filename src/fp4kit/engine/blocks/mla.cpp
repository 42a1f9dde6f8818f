// The multi-head latent attention block (transformers' DeepseekV3Attention, eager).
#include "fp4kit/engine/blocks/mla.hpp"

#include "fp4kit/engine/weights.hpp"

namespace fp4kit::engine {

MlaBlock::MlaBlock(const MlaConfig& cfg, MlaWeights w)
    : cfg_(cfg), w_(std::move(w)), rope_(cfg.rope_params) {}

void MlaBlock::forward(const RunContext& ctx, float* hidden) {
  Backend& be = ctx.be;
  const size_t H = cfg_.hidden;
  const int nh = cfg_.n_heads;
  const size_t R = static_cast<size_t>(cfg_.kv_lora_rank), dn = static_cast<size_t>(cfg_.qk_nope),
               dr = static_cast<size_t>(cfg_.qk_rope), dv = static_cast<size_t>(cfg_.v_dim);
  const size_t dqk = dn + dr, qs = nh * dqk, kvs = nh * (dn + dv), ckvs = R + dr, vs = nh * dv;
  const size_t QR = static_cast<size_t>(cfg_.q_lora_rank);
  AttentionOptions ao;
  ao.scale = cfg_.scale;
  ao.v_dim = static_cast<int>(dv);
  ao.v_stride = vs;
  for (const Batch::Span& b : ctx.batch.spans) {
    const size_t n = b.rows;
    float* h = hidden + b.row0 * H;
    be.ensure(normed_, n * H);
    be.rms_norm(h, n, H, w_.norm.f(), cfg_.eps, normed_.f());
    be.ensure(q_, n * qs);
    if (QR > 0) {
      ctx.observe({&w_.q_a.module, &w_.kv_a.module}, normed_.f(), n, H);
      be.ensure(qa_, n * QR);
      be.linear(w_.q_a, normed_.f(), n, qa_.f());
      be.rms_norm(qa_.f(), n, QR, w_.q_a_norm.f(), cfg_.latent_eps, qa_.f());
      ctx.observe({&w_.q.module}, qa_.f(), n, QR);
      be.linear(w_.q, qa_.f(), n, q_.f());
    } else {
      ctx.observe({&w_.q.module, &w_.kv_a.module}, normed_.f(), n, H);
      be.linear(w_.q, normed_.f(), n, q_.f());
    }
    // [latent c (R) | shared RoPE key (dr)] per token; kv_b_proj reads the normed latent only.
    be.ensure(ckv_, n * ckvs);
    be.linear(w_.kv_a, normed_.f(), n, ckv_.f());
    be.ensure(c_, n * R);
    be.copy_strided(ckv_.f(), ckvs, n, R, c_.f(), R);
    be.rms_norm(c_.f(), n, R, w_.kv_a_norm.f(), cfg_.latent_eps, c_.f());
    ctx.observe({&w_.kv_b.module}, c_.f(), n, R);
    be.ensure(kv_, n * kvs);
    be.linear(w_.kv_b, c_.f(), n, kv_.f());
    // RoPE on each query head's last dr dims and on the shared key, sequence by sequence.
    for (size_t s = b.seq0; s < b.seq1; ++s) {
      const size_t r0 = ctx.batch.offsets[s] - b.row0, len = ctx.batch.length(s);
      for (int hh = 0; hh < nh; ++hh)
        be.rope(q_.f() + r0 * qs + hh * dqk + dn, len, qs, 1, static_cast<int>(dr), rope_,
                cfg_.rope_style);
      be.rope(ckv_.f() + r0 * ckvs + R, len, ckvs, 1, static_cast<int>(dr), rope_,
              cfg_.rope_style);
    }
    // Keys [k_nope_h | k_pe] and values v_h per head.
    be.ensure(k_, n * qs);
    be.ensure(v_, n * vs);
    for (int hh = 0; hh < nh; ++hh) {
      const float* kvh = kv_.f() + hh * (dn + dv);
      be.copy_strided(kvh, kvs, n, dn, k_.f() + hh * dqk, qs);
      be.copy_strided(ckv_.f() + R, ckvs, n, dr, k_.f() + hh * dqk + dn, qs);
      be.copy_strided(kvh + dn, kvs, n, dv, v_.f() + hh * dv, vs);
    }
    be.ensure(att_, n * vs);
    for (size_t s = b.seq0; s < b.seq1; ++s) {
      const size_t r0 = ctx.batch.offsets[s] - b.row0;
      be.attention(q_.f() + r0 * qs, qs, k_.f() + r0 * qs, v_.f() + r0 * vs, qs,
                   ctx.batch.length(s), nh, nh, static_cast<int>(dqk), ao, att_.f() + r0 * vs,
                   vs);
    }
    ctx.observe({&w_.o.module}, att_.f(), n, vs);
    be.ensure(out_, n * H);
    be.linear(w_.o, att_.f(), n, out_.f());
    be.add(h, out_.f(), n * H);
  }
}

std::unique_ptr<Block> load_mla(const Checkpoint& ckpt, const ModelSpec& S, const LayerSpec& L,
                                Backend& be, bool act) {
  MlaConfig c;
  c.hidden = static_cast<size_t>(S.hidden);
  c.n_heads = static_cast<int>(S.n_heads);
  c.q_lora_rank = static_cast<int>(S.mla.q_lora_rank);
  c.kv_lora_rank = static_cast<int>(S.mla.kv_lora_rank);
  c.qk_nope = static_cast<int>(S.mla.qk_nope);
  c.qk_rope = static_cast<int>(S.mla.qk_rope);
  c.v_dim = static_cast<int>(S.mla.v);
  c.eps = S.eps;
  c.rope_style = S.mla.rope_interleave ? RopeStyle::Interleaved : RopeStyle::Half;
  c.rope_params = S.rope;
  c.scale = S.mla.softmax_scale;
  const std::string a = L.prefix + "self_attn.";
  MlaWeights w;
  w.norm = be.upload(load_vector(ckpt, L.prefix + "input_layernorm.weight", c.hidden));
  if (c.q_lora_rank > 0) {
    w.q_a = be.load_linear(ckpt, L.q_a, act);
    w.q_a_norm = be.upload(load_vector(ckpt, a + "q_a_layernorm.weight",
                                       static_cast<size_t>(c.q_lora_rank)));
  }
  w.q = be.load_linear(ckpt, L.q, act);
  w.kv_a = be.load_linear(ckpt, L.kv_a, act);
  w.kv_a_norm = be.upload(load_vector(ckpt, a + "kv_a_layernorm.weight",
                                      static_cast<size_t>(c.kv_lora_rank)));
  w.kv_b = be.load_linear(ckpt, L.kv_b, act);
  w.o = be.load_linear(ckpt, L.o, act);
  return std::make_unique<MlaBlock>(c, std::move(w));
}

}  // namespace fp4kit::engine
