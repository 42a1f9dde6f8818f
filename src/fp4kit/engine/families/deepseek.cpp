// DeepSeek-V3 / R1 (transformers' deepseek_v3; Kimi-K2 checkpoints are this model too):
// multi-head latent attention (blocks/mla), dense MLP before first_k_dense_replace, then MoE with
// the group-limited sigmoid router (e_score_correction_bias for selection only,
// routed_scaling_factor) and shared_experts. Layers past num_hidden_layers (the MTP layer) are
// never read. Config defaults are DeepseekV3Config's.
#include <cmath>

#include <fmt/format.h>

#include "fp4kit/engine/blocks/mla.hpp"
#include "fp4kit/engine/blocks/mlp.hpp"
#include "fp4kit/engine/blocks/moe.hpp"
#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/engine/families/spec_util.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit::engine {

namespace {

double yarn_get_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

void configure(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s) {
  const nlohmann::json& text = cfg.text;
  const std::string label = (ckpt.dir() / "config.json").string();
  MlaDims& m = s.mla;
  auto q = text.find("q_lora_rank");
  m.q_lora_rank = q == text.end() ? 1536 : (q->is_null() ? 0 : json_int(text, "q_lora_rank", 0));
  m.kv_lora_rank = json_int(text, "kv_lora_rank", 512);
  m.qk_nope = json_int(text, "qk_nope_head_dim", 128);
  m.qk_rope = json_int(text, "qk_rope_head_dim", 64);
  m.v = json_int(text, "v_head_dim", 128);
  m.rope_interleave = json_bool(text, "rope_interleave", true);
  if (m.q_lora_rank < 0 || m.kv_lora_rank <= 0 || m.qk_nope < 0 || m.qk_rope <= 0 ||
      m.qk_rope % 2 != 0 || m.qk_rope > 1024 || m.v <= 0)
    throw Error(fmt::format("{}: MLA dimensions q_lora_rank {}, kv_lora_rank {}, "
                            "qk_nope_head_dim {}, qk_rope_head_dim {} (even), v_head_dim {} are "
                            "not usable", label, m.q_lora_rank, m.kv_lora_rank, m.qk_nope,
                            m.qk_rope, m.v));
  s.head_dim = m.qk_rope;  // DeepseekV3Config: head_dim = qk_rope_head_dim (the RoPE width)
  s.rope = RopeParams::from_config(text, cfg.rope_theta, static_cast<int>(m.qk_rope), label);
  // yarn_apply_mscale: qk_head_dim^-1/2, times mscale(factor, mscale_all_dim)^2 for a scaled RoPE.
  double scale = 1.0 / std::sqrt(static_cast<double>(m.qk_nope + m.qk_rope));
  if (s.rope.type != "default" && s.rope.mscale_all_dim != 0.0) {
    const double ms = yarn_get_mscale(s.rope.factor, s.rope.mscale_all_dim);
    scale = scale * ms * ms;
  }
  m.softmax_scale = static_cast<float>(scale);
  configure_sigmoid_group_router(cfg, s, label, 8, 4, 2.5);
}

void layer(const Checkpoint& ckpt, const ModelConfig& cfg, ModelSpec& s, int64_t l, LayerSpec& L) {
  const MlaDims& m = s.mla;
  const std::string a = L.prefix + "self_attn.";
  const auto H = static_cast<uint64_t>(s.hidden), nh = static_cast<uint64_t>(s.n_heads);
  const auto qk = static_cast<uint64_t>(m.qk_nope + m.qk_rope);
  L.mla = true;
  bool ok = true;
  if (m.q_lora_rank > 0) {
    L.q_a = linear(ckpt, a + "q_a_proj");
    L.q = linear(ckpt, a + "q_b_proj");
    ok = L.q_a.rows == static_cast<uint64_t>(m.q_lora_rank) && L.q_a.cols == H &&
         L.q.cols == L.q_a.rows;
  } else {
    L.q = linear(ckpt, a + "q_proj");
    ok = L.q.cols == H;
  }
  L.kv_a = linear(ckpt, a + "kv_a_proj_with_mqa");
  L.kv_b = linear(ckpt, a + "kv_b_proj");
  L.o = linear(ckpt, a + "o_proj");
  ok = ok && L.q.rows == nh * qk && L.kv_a.cols == H &&
       L.kv_a.rows == static_cast<uint64_t>(m.kv_lora_rank + m.qk_rope) &&
       L.kv_b.cols == static_cast<uint64_t>(m.kv_lora_rank) &&
       L.kv_b.rows == nh * static_cast<uint64_t>(m.qk_nope + m.v) &&
       L.o.cols == nh * static_cast<uint64_t>(m.v) && L.o.rows == H;
  if (!ok)
    throw Error(fmt::format("{}: MLA shapes of layer {} ({}q_*_proj, kv_a_proj_with_mqa, "
                            "kv_b_proj, o_proj) do not match config.json's heads {}, q_lora_rank "
                            "{}, kv_lora_rank {}, qk_nope/rope/v head dims {}/{}/{}",
                            ckpt.dir().string(), l, a, s.n_heads, m.q_lora_rank, m.kv_lora_rank,
                            m.qk_nope, m.qk_rope, m.v));
  first_k_dense_mlp(ckpt, cfg, s, l, 3, L);
}

std::vector<BlockLoader> blocks(const Checkpoint& ckpt, const ModelSpec& S, const LayerSpec& L,
                                Backend& be, bool act) {
  std::vector<BlockLoader> out;
  out.push_back([&ckpt, &S, &L, &be, act] { return load_mla(ckpt, S, L, be, act); });
  if (L.moe)
    out.push_back([&ckpt, &S, &L, &be, act] { return load_moe(ckpt, S, L, be, act); });
  else
    out.push_back([&ckpt, &S, &L, &be, act] { return load_dense_mlp(ckpt, S, L, be, act); });
  return out;
}

}  // namespace

const FamilyDef& deepseek_v3_family() {
  static const FamilyDef d = [] {
    FamilyDef f{Family::DeepseekV3, "deepseek_v3", {"deepseek_v3"}};
    f.moe = true;
    f.configure = configure;
    f.layer = layer;
    f.blocks = blocks;
    return f;
  }();
  return d;
}

}  // namespace fp4kit::engine
