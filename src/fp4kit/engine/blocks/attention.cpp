// The attention block (transformers' eager attention of llama / qwen3 / gpt-oss / llama4).
#include "fp4kit/engine/blocks/attention.hpp"

#include <cmath>
#include <optional>

#include "fp4kit/engine/profile.hpp"
#include "fp4kit/engine/weights.hpp"

namespace fp4kit::engine {

AttentionBlock::AttentionBlock(const AttentionConfig& cfg, AttentionWeights w)
    : cfg_(cfg), w_(std::move(w)), rope_(cfg.rope_params) {}

void AttentionBlock::forward(const RunContext& ctx, float* hidden) {
  Backend& be = ctx.be;
  const size_t H = cfg_.hidden;
  const int nh = cfg_.n_heads, nkv = cfg_.n_kv_heads, hd = cfg_.head_dim;
  const size_t qdim = static_cast<size_t>(nh) * hd, kvdim = static_cast<size_t>(nkv) * hd;
  AttentionOptions ao;
  ao.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  ao.window = cfg_.window;
  ao.chunk = cfg_.chunk;
  ao.sinks = w_.sinks.empty() ? nullptr : w_.sinks.f();
  for (const Batch::Span& b : ctx.batch.spans) {
    std::optional<profile::Scope> ph(std::in_place, "attn: norm, q/k/v products, rope");
    float* h = hidden + b.row0 * H;
    be.ensure(normed_, b.rows * H);
    be.rms_norm(h, b.rows, H, w_.norm.f(), cfg_.eps, normed_.f(), cfg_.norm_one_plus);
    ctx.observe({&w_.q.module, &w_.k.module, &w_.v.module}, normed_.f(), b.rows, H);
    be.ensure(q_, b.rows * qdim);
    be.ensure(k_, b.rows * kvdim);
    be.ensure(v_, b.rows * kvdim);
    be.linear(w_.q, normed_.f(), b.rows, q_.f());
    be.linear(w_.k, normed_.f(), b.rows, k_.f());
    be.linear(w_.v, normed_.f(), b.rows, v_.f());
    if (cfg_.qk_norm && cfg_.qk_norm_whole) {
      be.rms_norm(q_.f(), b.rows, qdim, w_.q_norm.f(), cfg_.eps, q_.f(), cfg_.norm_one_plus);
      be.rms_norm(k_.f(), b.rows, kvdim, w_.k_norm.f(), cfg_.eps, k_.f(), cfg_.norm_one_plus);
    } else if (cfg_.qk_norm) {
      be.rms_norm(q_.f(), b.rows * nh, hd, w_.q_norm.f(), cfg_.eps, q_.f(), cfg_.norm_one_plus);
      be.rms_norm(k_.f(), b.rows * nkv, hd, w_.k_norm.f(), cfg_.eps, k_.f(), cfg_.norm_one_plus);
    }
    for (size_t s = b.seq0; s < b.seq1; ++s) {
      const size_t r0 = ctx.batch.offsets[s] - b.row0, len = ctx.batch.length(s);
      float* qs = q_.f() + r0 * qdim;
      if (cfg_.rope) {
        be.rope(qs, len, qdim, nh, hd, rope_, cfg_.rope_style);
        be.rope(k_.f() + r0 * kvdim, len, kvdim, nkv, hd, rope_, cfg_.rope_style);
      } else if (cfg_.temperature) {
        be.attention_temperature(qs, len, qdim, qdim, cfg_.floor_scale, cfg_.attn_scale);
      }
    }
    if (cfg_.l2_qk_norm) {
      be.rms_norm(q_.f(), b.rows * nh, hd, nullptr, cfg_.eps, q_.f());
      be.rms_norm(k_.f(), b.rows * nkv, hd, nullptr, cfg_.eps, k_.f());
    }
    ph.emplace("attn: attention core");
    be.ensure(att_, b.rows * qdim);
    for (size_t s = b.seq0; s < b.seq1; ++s) {
      const size_t r0 = ctx.batch.offsets[s] - b.row0;
      be.attention(q_.f() + r0 * qdim, qdim, k_.f() + r0 * kvdim, v_.f() + r0 * kvdim, kvdim,
                   ctx.batch.length(s), nh, nkv, hd, ao, att_.f() + r0 * qdim, qdim);
    }
    ph.emplace("attn: o product, add");
    if (cfg_.output_gate) {
      be.ensure(gate_, b.rows * qdim);
      be.linear(w_.q_gate, normed_.f(), b.rows, gate_.f());
      be.mul_sigmoid(att_.f(), gate_.f(), b.rows * qdim);
    }
    ctx.observe({&w_.o.module}, att_.f(), b.rows, qdim);
    be.ensure(out_, b.rows * H);
    be.linear(w_.o, att_.f(), b.rows, out_.f());
    be.add(h, out_.f(), b.rows * H);
  }
}

std::unique_ptr<Block> load_attention(const Checkpoint& ckpt, const ModelSpec& S,
                                      const LayerSpec& L, Backend& be, bool act) {
  AttentionConfig c;
  c.hidden = static_cast<size_t>(S.hidden);
  c.n_heads = static_cast<int>(S.n_heads);
  c.n_kv_heads = static_cast<int>(S.n_kv_heads);
  c.head_dim = static_cast<int>(S.head_dim);
  c.eps = S.eps;
  c.qk_norm = L.qk_norm || L.qk_norm_whole;
  c.qk_norm_whole = L.qk_norm_whole;
  c.l2_qk_norm = L.l2_qk_norm;
  c.rope = L.rope;
  c.rope_style = S.rope_interleaved ? RopeStyle::Interleaved : RopeStyle::Half;
  c.rope_params = S.rope;
  c.temperature = L.temperature_tuning;
  c.floor_scale = S.floor_scale;
  c.attn_scale = S.attn_scale;
  c.window = L.sliding_window;
  c.chunk = L.attention_chunk;
  c.norm_one_plus = S.norm_one_plus;
  c.output_gate = L.attn_output_gate;
  AttentionWeights w;
  w.norm = be.upload(load_vector(ckpt, L.prefix + "input_layernorm.weight", c.hidden));
  if (L.attn_output_gate) {
    // q_proj rows per head h: [h * 2D, h * 2D + D) the query, the next D its output gate.
    const Linear qg = be.load_linear(ckpt, L.q, act);
    std::vector<size_t> qrows, grows;
    const auto D = static_cast<size_t>(c.head_dim);
    for (size_t h = 0; h < static_cast<size_t>(c.n_heads); ++h)
      for (size_t i = 0; i < D; ++i) {
        qrows.push_back(h * 2 * D + i);
        grows.push_back(h * 2 * D + D + i);
      }
    w.q = be.take_rows(qg, qrows);
    w.q_gate = be.take_rows(qg, grows);
  } else {
    w.q = be.load_linear(ckpt, L.q, act);
  }
  w.k = be.load_linear(ckpt, L.k, act);
  w.v = be.load_linear(ckpt, L.v, act);
  w.o = be.load_linear(ckpt, L.o, act);
  const auto hd = static_cast<size_t>(c.head_dim);
  if (L.attn_sinks)
    w.sinks = be.upload(load_vector(ckpt, L.prefix + "self_attn.sinks",
                                    static_cast<size_t>(c.n_heads)));
  if (L.qk_norm_whole) {
    w.q_norm = be.upload(load_vector(ckpt, L.prefix + "self_attn.q_norm.weight",
                                     hd * static_cast<size_t>(c.n_heads)));
    w.k_norm = be.upload(load_vector(ckpt, L.prefix + "self_attn.k_norm.weight",
                                     hd * static_cast<size_t>(c.n_kv_heads)));
  } else if (L.qk_norm) {
    w.q_norm = be.upload(load_vector(ckpt, L.prefix + "self_attn.q_norm.weight", hd));
    w.k_norm = be.upload(load_vector(ckpt, L.prefix + "self_attn.k_norm.weight", hd));
  }
  return std::make_unique<AttentionBlock>(c, std::move(w));
}

}  // namespace fp4kit::engine
