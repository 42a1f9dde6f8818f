// ModelSpec from a checkpoint: the dimensions every family shares, then the family's own table
// (families/, found by model_type) for RoPE, routing and each layer's tensors.
#include "fp4kit/engine/model_spec.hpp"

#include <fmt/format.h>

#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/engine/families/spec_util.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"

namespace fp4kit::engine {

const char* family_name(Family f) { return family_def(f).name; }

ModelSpec ModelSpec::from_checkpoint(const Checkpoint& ckpt) {
  const std::string label = (ckpt.dir() / "config.json").string();
  if (!ckpt.has_config()) throw Error(ckpt.dir().string() + ": config.json is missing (engine)");
  const ModelConfig cfg = ModelConfig::parse(ckpt.config(), label);
  const nlohmann::json& text = cfg.text;
  ModelSpec s;
  s.model_type = cfg.model_type;
  const FamilyDef* def = find_family(cfg.model_type);
  if (!def)
    throw Error(fmt::format("{}: model_type '{}' is not supported by the engine (supported: {})",
                            label, cfg.model_type, supported_model_types()));
  s.family = def->id;
  // A multimodal wrapper's text part runs only where the family says so; the vision tower is
  // never read.
  if (cfg.has_text_config && !def->text_config)
    throw Error(label + ": multimodal wrappers (text_config) are not supported by the engine");
  auto act = text.find("hidden_act");
  if (act != text.end() && act->is_string() && *act != "silu")
    throw Error(fmt::format("{}: hidden_act '{}' is not supported (engine implements silu)", label,
                            act->get<std::string>()));
  s.hidden = cfg.hidden_size;
  s.n_layers = cfg.num_hidden_layers;
  s.n_heads = cfg.num_attention_heads;
  s.n_kv_heads = cfg.num_key_value_heads > 0 ? cfg.num_key_value_heads : cfg.num_attention_heads;
  s.head_dim = cfg.head_dim;
  s.vocab = cfg.vocab_size;
  s.eps = static_cast<float>(cfg.rms_norm_eps);
  // Standard attention: head_dim from config.json, else hidden_size / num_attention_heads, and
  // whole query groups per key/value head. MLA families check their own widths in configure.
  const bool heads_ok = def->own_head_dims || (s.head_dim > 0 && s.n_heads % s.n_kv_heads == 0 &&
                                                s.head_dim % 2 == 0 && s.head_dim <= 1024);
  if (s.hidden <= 0 || s.n_layers <= 0 || s.n_heads <= 0 || s.vocab <= 0 || !heads_ok)
    throw Error(fmt::format("{}: inconsistent dimensions (hidden {}, layers {}, heads {}/{}, "
                            "head_dim {}, vocab {})", label, s.hidden, s.n_layers, s.n_heads,
                            s.n_kv_heads, s.head_dim, s.vocab));
  s.n_experts = cfg.num_experts;
  s.top_k = cfg.num_experts_per_tok;
  s.norm_topk = cfg.norm_topk_prob;
  def->configure(ckpt, cfg, s);
  if (def->moe && (s.n_experts <= 0 || s.top_k <= 0 || s.top_k > s.n_experts))
    throw Error(fmt::format("{}: MoE config needs 0 < num_experts_per_tok ({}) <= num_experts ({})",
                            label, s.top_k, s.n_experts));

  const FamilyDef::Roots roots = def->roots ? def->roots(ckpt, s) : FamilyDef::Roots{};
  const std::string& root = roots.model;
  s.embed = root + "embed_tokens.weight";
  if (!ckpt.has(s.embed)) throw Error(ckpt.dir().string() + ": tensor " + s.embed + " is missing");
  s.final_norm = root + "norm.weight";
  if (!ckpt.has(s.final_norm))
    throw Error(ckpt.dir().string() + ": tensor " + s.final_norm + " is missing");
  if (has_linear(ckpt, roots.head + "lm_head")) {
    s.lm_head = linear(ckpt, roots.head + "lm_head");
  } else {
    // Tied embeddings (tie_word_embeddings, or simply no lm_head tensor, as transformers ties).
    s.lm_head_tied = true;
    s.lm_head.module = root + "embed_tokens";
    const auto& e = ckpt.info(s.embed);
    s.lm_head.rows = e.shape.at(0);
    s.lm_head.cols = e.shape.at(1);
  }
  for (int64_t l = 0; l < s.n_layers; ++l) {
    LayerSpec L;
    L.prefix = fmt::format("{}layers.{}.", root, l);
    def->layer(ckpt, cfg, s, l, L);
    s.layers.push_back(std::move(L));
  }
  return s;
}

}  // namespace fp4kit::engine
