// Shared readers of the family tables.
#include "fp4kit/engine/families/spec_util.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/model/packed_int.hpp"
#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit::engine {

std::string config_label(const Checkpoint& c) { return (c.dir() / "config.json").string(); }

void config_rope(const Checkpoint& c, const ModelConfig& cfg, ModelSpec& s,
                 double default_partial) {
  s.rope = RopeParams::from_config(cfg.text, cfg.rope_theta, static_cast<int>(s.head_dim),
                                   config_label(c), default_partial);
}

void default_eps(const ModelConfig& cfg, ModelSpec& s, float eps) {
  if (!cfg.text.contains("rms_norm_eps")) s.eps = eps;
}

bool has_linear(const Checkpoint& c, const std::string& m) {
  return c.has(m + ".weight") || c.has(m + ".weight_packed");
}

std::pair<uint64_t, uint64_t> linear_shape(const Checkpoint& c, const std::string& m) {
  if (is_packed_int(c, m)) {  // compressed-tensors pack-quantized: weight_shape says [n, k]
    const PackedIntWeight p = packed_int_weight(c, m);
    return {p.rows, p.cols};
  }
  if (c.has(m + ".weight_packed")) {
    const auto& t = c.info(m + ".weight_packed");
    return {t.shape.at(0), t.shape.at(1) * 2};
  }
  const auto& t = c.info(m + ".weight");
  if (t.shape.size() != 2)
    throw Error(fmt::format("{}: tensor {}.weight has {} dimensions, expected 2",
                            c.dir().string(), m, t.shape.size()));
  if (t.dtype == DType::U8) return {t.shape[0], t.shape[1] * 2};  // NVFP4 format A
  return {t.shape[0], t.shape[1]};
}

LinearRef linear(const Checkpoint& c, const std::string& m) {
  if (!has_linear(c, m))
    throw Error(fmt::format("{}: tensor {}.weight is missing (engine)", c.dir().string(), m));
  auto [n, k] = linear_shape(c, m);
  LinearRef r;
  r.module = m;
  r.rows = n;
  r.cols = k;
  return r;
}

bool json_bool(const nlohmann::json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return (it != j.end() && it->is_boolean()) ? it->get<bool>() : fallback;
}
int64_t json_int(const nlohmann::json& j, const char* key, int64_t fallback) {
  auto it = j.find(key);
  return (it != j.end() && it->is_number_integer()) ? it->get<int64_t>() : fallback;
}

double json_num(const nlohmann::json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return (it != j.end() && it->is_number()) ? it->get<double>() : fallback;
}

BmmRef bmm_ref(const Checkpoint& c, const std::string& module, uint64_t experts, uint64_t want_n,
               uint64_t want_k) {
  BmmRef r;
  r.module = module;
  const std::string where = c.dir().string();
  if (c.has(module + "_blocks")) {
    const auto& b = c.info(module + "_blocks");
    if (!c.has(module + "_scales"))
      throw Error(fmt::format("{}: MXFP4 tensor {}_blocks has no {}_scales", where, module,
                              module));
    const auto& s = c.info(module + "_scales");
    if (b.dtype != DType::U8 || b.shape.size() != 4 || b.shape[3] != 16 || s.dtype != DType::U8 ||
        s.shape.size() != 3 || s.shape[0] != b.shape[0] || s.shape[1] != b.shape[1] ||
        s.shape[2] != b.shape[2])
      throw Error(fmt::format("{}: MXFP4 {}_blocks must be U8 [E, N, K/32, 16] with {}_scales U8 "
                              "[E, N, K/32]", where, module, module));
    r.storage = BmmRef::Storage::Mxfp4;
    r.n = b.shape[1];
    r.k = b.shape[2] * 32;
    if (b.shape[0] != experts)
      throw Error(fmt::format("{}: {}_blocks holds {} experts, config.json says {}", where, module,
                              b.shape[0], experts));
  } else {
    if (!c.has(module))
      throw Error(fmt::format("{}: BMM expert tensor {} (or {}_blocks) is missing (engine)", where,
                              module, module));
    const auto& t = c.info(module);
    if (t.shape.size() != 3 || t.shape[0] != experts)
      throw Error(fmt::format("{}: BMM expert tensor {} must be 3-D [{}, K, N]", where, module,
                              experts));
    if (t.dtype == DType::U8 && c.has(module + "_weight_scale")) {
      r.storage = BmmRef::Storage::Nvfp4;  // spec 4: U8 [E, K/2, N]
      r.n = t.shape[2];
      r.k = t.shape[1] * 2;
    } else if (dtype_is_float(t.dtype)) {
      r.storage = BmmRef::Storage::Float;
      r.n = t.shape[2];
      r.k = t.shape[1];
    } else {
      throw Error(fmt::format("{}: BMM expert tensor {} has dtype {} the engine cannot decode",
                              where, module, dtype_name(t.dtype)));
    }
  }
  if ((want_n > 0 && r.n != want_n) || (want_k > 0 && r.k != want_k))
    throw Error(fmt::format("{}: BMM expert tensor {} holds [{}, {}] matrices (as [N, K]), "
                            "expected [{}, {}]", where, module, r.n, r.k, want_n, want_k));
  return r;
}

std::vector<int64_t> json_int_list(const nlohmann::json& j, const char* key, bool* present,
                                   const std::string& label) {
  std::vector<int64_t> out;
  *present = false;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array())
    throw Error(fmt::format("{}: {} must be a list of integers", label, key));
  for (const auto& v : *it) {
    if (v.is_boolean()) out.push_back(v.get<bool>() ? 1 : 0);
    else if (v.is_number_integer()) out.push_back(v.get<int64_t>());
    else throw Error(fmt::format("{}: {} must be a list of integers", label, key));
  }
  *present = true;
  return out;
}

void moe_router(const Checkpoint& c, const std::string& module, LayerSpec& L) {
  L.moe = true;
  L.router = module;
  if (!c.has(module + ".weight"))
    throw Error(fmt::format("{}: router {}.weight is missing", c.dir().string(), module));
}

void bmm_experts(const Checkpoint& c, const ModelSpec& s, const std::string& block,
                 LayerSpec& L) {
  const auto E = static_cast<uint64_t>(s.n_experts), H = static_cast<uint64_t>(s.hidden);
  L.bmm_experts = true;
  L.bmm_gate_up = bmm_ref(c, block + "experts.gate_up_proj", E, 0, H);
  if (L.bmm_gate_up.n % 2 != 0)
    throw Error(fmt::format("{}: {} has an odd 2I = {}", c.dir().string(), L.bmm_gate_up.module,
                            L.bmm_gate_up.n));
  const uint64_t inter = L.bmm_gate_up.n / 2;
  L.bmm_down = bmm_ref(c, block + "experts.down_proj", E, H, inter);
  for (uint64_t e = 0; e < E; ++e) {
    ExpertRef x;
    x.prefix = fmt::format("{}experts.{}", block, e);
    x.gate = {L.bmm_gate_up.module, "", 0, inter, H};
    x.up = x.gate;
    x.down = {L.bmm_down.module, "", 0, H, inter};
    L.experts.push_back(std::move(x));
  }
}

void standard_attention(const Checkpoint& ckpt, const ModelSpec& s, int64_t l, LayerSpec& L,
                        int q_factor) {
  const std::string a = L.prefix + "self_attn.";
  L.q = linear(ckpt, a + "q_proj");
  L.k = linear(ckpt, a + "k_proj");
  L.v = linear(ckpt, a + "v_proj");
  L.o = linear(ckpt, a + "o_proj");
  if (L.q.rows != static_cast<uint64_t>(q_factor * s.n_heads * s.head_dim) ||
      L.k.rows != static_cast<uint64_t>(s.n_kv_heads * s.head_dim) ||
      L.v.rows != L.k.rows || L.q.cols != static_cast<uint64_t>(s.hidden) ||
      L.o.cols != static_cast<uint64_t>(s.n_heads * s.head_dim) || L.o.rows != static_cast<uint64_t>(s.hidden))
    throw Error(fmt::format("{}: attention shapes of layer {} do not match config.json",
                            ckpt.dir().string(), l));
}

void standard_moe(const Checkpoint& ckpt, const ModelSpec& s, const std::string& block,
                  bool mixtral_names, LayerSpec& L) {
  moe_router(ckpt, block + "gate", L);
  const std::string fused_gu = block + "experts.gate_up_proj";
  const bool fused = ckpt.has(fused_gu) && ckpt.has(block + "experts.down_proj");
  uint64_t inter = 0;
  if (fused) {
    const auto& gu = ckpt.info(fused_gu);
    const auto& dn = ckpt.info(block + "experts.down_proj");
    if (gu.shape.size() != 3 || dn.shape.size() != 3 ||
        gu.shape[0] != static_cast<uint64_t>(s.n_experts) || gu.shape[1] % 2 != 0 ||
        gu.shape[2] != static_cast<uint64_t>(s.hidden) || dn.shape[0] != gu.shape[0] ||
        dn.shape[1] != static_cast<uint64_t>(s.hidden) || dn.shape[2] != gu.shape[1] / 2)
      throw Error(fmt::format("{}: fused experts {} / down_proj have unexpected shapes",
                              ckpt.dir().string(), fused_gu));
    inter = gu.shape[1] / 2;
  }
  for (int64_t e = 0; e < s.n_experts; ++e) {
    ExpertRef x;
    x.prefix = fmt::format("{}experts.{}", block, e);
    if (fused) {
      // Output names are per expert (spec section 4); bytes come from row ranges.
      x.gate = {x.prefix + ".gate_proj", fused_gu, static_cast<uint64_t>(e) * 2 * inter,
                inter, static_cast<uint64_t>(s.hidden)};
      x.up = {x.prefix + ".up_proj", fused_gu, static_cast<uint64_t>(e) * 2 * inter + inter,
              inter, static_cast<uint64_t>(s.hidden)};
      x.down = {x.prefix + ".down_proj", block + "experts.down_proj",
                static_cast<uint64_t>(e * s.hidden), static_cast<uint64_t>(s.hidden), inter};
    } else if (mixtral_names) {
      x.gate = linear(ckpt, x.prefix + ".w1");
      x.up = linear(ckpt, x.prefix + ".w3");
      x.down = linear(ckpt, x.prefix + ".w2");
    } else {
      x.gate = linear(ckpt, x.prefix + ".gate_proj");
      x.up = linear(ckpt, x.prefix + ".up_proj");
      x.down = linear(ckpt, x.prefix + ".down_proj");
    }
    L.experts.push_back(std::move(x));
  }
  // Qwen's shared_expert, or DeepSeek's / GLM's shared_experts (one MLP of I * n_shared).
  const std::string shared = has_linear(ckpt, block + "shared_experts.gate_proj")
                                 ? block + "shared_experts."
                                 : block + "shared_expert.";
  if (has_linear(ckpt, shared + "gate_proj")) {
    L.has_shared_expert = true;
    L.shared_gate = linear(ckpt, shared + "gate_proj");
    L.shared_up = linear(ckpt, shared + "up_proj");
    L.shared_down = linear(ckpt, shared + "down_proj");
    if (has_linear(ckpt, block + "shared_expert_gate"))
      L.shared_expert_gate = block + "shared_expert_gate";
  }
}

bool qwen_sparse_layer(const ModelConfig& cfg, const ModelSpec& s, int64_t l) {
  const bool mlp_only = std::find(cfg.mlp_only_layers.begin(), cfg.mlp_only_layers.end(), l) !=
                        cfg.mlp_only_layers.end();
  const int64_t step = cfg.decoder_sparse_step > 0 ? cfg.decoder_sparse_step : 1;
  return !mlp_only && s.n_experts > 0 && (l + 1) % step == 0;
}

void dense_mlp(const Checkpoint& ckpt, LayerSpec& L) {
  L.gate = linear(ckpt, L.prefix + "mlp.gate_proj");
  L.up = linear(ckpt, L.prefix + "mlp.up_proj");
  L.down = linear(ckpt, L.prefix + "mlp.down_proj");
}

std::string layer_type(const ModelConfig& cfg, int64_t l, int64_t layers, const std::string& label) {
  if (cfg.layer_types.empty()) return "";
  if (static_cast<size_t>(l) >= cfg.layer_types.size())
    throw Error(fmt::format("{}: layer_types has {} entries for {} layers", label,
                            cfg.layer_types.size(), layers));
  return cfg.layer_types[static_cast<size_t>(l)];
}

// The group-limited sigmoid router's settings (DeepSeek-V3, GLM-4-MoE), checked; the defaults are
// the family config class's.
void configure_sigmoid_group_router(const ModelConfig& cfg, ModelSpec& s, const std::string& label,
                                    int64_t default_groups, int64_t default_topk_groups,
                                    double default_scaling) {
  const nlohmann::json& text = cfg.text;
  s.routing = Routing::SigmoidGroupTopk;
  s.n_group = json_int(text, "n_group", default_groups);
  s.topk_group = json_int(text, "topk_group", default_topk_groups);
  s.routed_scaling = static_cast<float>(json_num(text, "routed_scaling_factor", default_scaling));
  s.norm_topk = json_bool(text, "norm_topk_prob", true);
  if (s.n_experts <= 0) return;  // a dense model: no router
  const int64_t per = s.n_group > 0 ? s.n_experts / s.n_group : 0;
  if (s.n_group <= 0 || s.n_experts % s.n_group != 0 || s.topk_group <= 0 ||
      s.topk_group > s.n_group || (s.n_group > 1 && per < 2) || s.top_k > s.topk_group * per)
    throw Error(fmt::format("{}: router groups do not fit: {} experts in n_group {} (each group "
                            "needs at least 2 experts when n_group > 1), topk_group {}, "
                            "num_experts_per_tok {} (at most topk_group x experts per group)",
                            label, s.n_experts, s.n_group, s.topk_group, s.top_k));
}

// Dense MLP (mlp.{gate,up,down}_proj) for layers before first_k_dense_replace, else the MoE under
// mlp. (per-expert or fused experts, router mlp.gate, shared_experts).
void first_k_dense_mlp(const Checkpoint& ckpt, const ModelConfig& cfg, const ModelSpec& s,
                       int64_t l, int64_t default_first_k, LayerSpec& L) {
  const int64_t first_k = json_int(cfg.text, "first_k_dense_replace", default_first_k);
  if (s.n_experts > 0 && l >= first_k) {
    standard_moe(ckpt, s, L.prefix + "mlp.", false, L);
    return;
  }
  dense_mlp(ckpt, L);
}

}  // namespace fp4kit::engine
