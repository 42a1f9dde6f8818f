// ModelConfig::parse: tolerant of missing keys and nulls (fine-tuned and multimodal checkpoints
// drop or nest them), strict about wrong types (a string where a number belongs is a broken file,
// and guessing would hide it).
#include "fp4kit/model/config.hpp"

#include <cmath>

#include <fmt/format.h>

#include "fp4kit/error.hpp"
#include "fp4kit/io/json_strict.hpp"

namespace fp4kit {
namespace {

using nlohmann::json;

// Looks keys up in the language-model section first, then in the outer config (wrappers keep
// some keys, e.g. tie_word_embeddings, outside text_config). `where` names the key in errors.
class Lookup {
 public:
  Lookup(const json& raw, const json& text, bool nested, const std::string& label)
      : raw_(raw), text_(text), nested_(nested), label_(label) {}

  // The value of the first present, non-null key among `keys`, with its dotted name.
  const json* find(std::initializer_list<const char*> keys, std::string* where) const {
    for (const char* k : keys) {
      if (nested_) {
        auto it = text_.find(k);
        if (it != text_.end() && !it->is_null()) {
          *where = std::string("text_config.") + k;
          return &*it;
        }
      }
      auto it = raw_.find(k);
      if (it != raw_.end() && !it->is_null()) {
        *where = k;
        return &*it;
      }
    }
    return nullptr;
  }

  [[noreturn]] void wrong(const std::string& where, const char* expected, const json& v) const {
    throw Error(fmt::format("{}: config key \"{}\" must be {}, found {} ({})", label_, where,
                            expected, v.type_name(), v.dump().substr(0, 80)));
  }

  int64_t integer(std::initializer_list<const char*> keys, int64_t fallback) const {
    std::string where;
    const json* v = find(keys, &where);
    if (!v) return fallback;
    if (v->is_number_integer() || v->is_number_unsigned()) return v->get<int64_t>();
    // Some exporters write 64.0; accept a float only when it is a whole number.
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15)
        return static_cast<int64_t>(d);
    }
    wrong(where, "an integer", *v);
  }

  double number(std::initializer_list<const char*> keys, double fallback) const {
    std::string where;
    const json* v = find(keys, &where);
    if (!v) return fallback;
    if (v->is_number()) return v->get<double>();
    wrong(where, "a number", *v);
  }

  bool boolean(std::initializer_list<const char*> keys, bool fallback) const {
    std::string where;
    const json* v = find(keys, &where);
    if (!v) return fallback;
    if (v->is_boolean()) return v->get<bool>();
    wrong(where, "true or false", *v);
  }

  std::string string(std::initializer_list<const char*> keys) const {
    std::string where;
    const json* v = find(keys, &where);
    if (!v) return "";
    if (v->is_string()) return v->get<std::string>();
    wrong(where, "a string", *v);
  }

  std::vector<int64_t> int_list(const char* key) const {
    std::string where;
    const json* v = find({key}, &where);
    std::vector<int64_t> out;
    if (!v) return out;
    if (!v->is_array()) wrong(where, "a list of integers", *v);
    for (const json& e : *v) {
      if (!e.is_number_integer()) wrong(where, "a list of integers", *v);
      out.push_back(e.get<int64_t>());
    }
    return out;
  }

  std::vector<std::string> string_list(const char* key) const {
    std::string where;
    const json* v = find({key}, &where);
    std::vector<std::string> out;
    if (!v) return out;
    if (!v->is_array()) wrong(where, "a list of strings", *v);
    for (const json& e : *v) {
      if (!e.is_string()) wrong(where, "a list of strings", *v);
      out.push_back(e.get<std::string>());
    }
    return out;
  }

 private:
  const json& raw_;
  const json& text_;
  bool nested_;
  const std::string& label_;
};

}  // namespace

ModelConfig ModelConfig::parse(const json& config, const std::string& label) {
  if (!config.is_object())
    throw Error(fmt::format("{}: config must be a JSON object, found {}", label,
                            config.type_name()));
  ModelConfig c;
  c.raw = config;
  c.text = config;
  auto tc = config.find("text_config");
  if (tc != config.end() && !tc->is_null()) {
    if (!tc->is_object())
      throw Error(fmt::format("{}: config key \"text_config\" must be an object, found {}", label,
                              tc->type_name()));
    c.text = *tc;
    c.has_text_config = true;
  }
  // A quantization config that is not an object cannot say how the weights are stored: a
  // malformed one must not read as an unquantized checkpoint.
  for (const json* where : std::initializer_list<const json*>{&config, &c.text}) {
    for (const char* key : {"quantization_config", "compression_config"}) {
      auto q = where->find(key);
      if (q != where->end() && !q->is_null() && !q->is_object())
        throw Error(fmt::format("{}: config key \"{}{}\" is malformed ({}, expected an object)",
                                label, where == &config ? "" : "text_config.", key,
                                json_kind(*q)));
    }
  }
  Lookup in(c.raw, c.text, c.has_text_config, label);

  // Outer model_type: only the top level. Language model_type: text_config's, else the outer one.
  {
    auto it = config.find("model_type");
    if (it != config.end() && !it->is_null()) {
      if (!it->is_string()) in.wrong("model_type", "a string", *it);
      c.outer_model_type = it->get<std::string>();
    }
    c.model_type = c.outer_model_type;
    if (c.has_text_config) {
      auto jt = c.text.find("model_type");
      if (jt != c.text.end() && !jt->is_null()) {
        if (!jt->is_string()) in.wrong("text_config.model_type", "a string", *jt);
        c.model_type = jt->get<std::string>();
      }
    }
  }

  // architectures: null, missing or [] in fine-tuned checkpoints (ModelOpt crashed on that).
  {
    auto it = config.find("architectures");
    if (it != config.end() && !it->is_null()) {
      if (it->is_string()) {
        c.architectures.push_back(it->get<std::string>());
      } else if (it->is_array()) {
        for (const json& a : *it) {
          if (!a.is_string()) in.wrong("architectures", "a list of strings", *it);
          c.architectures.push_back(a.get<std::string>());
        }
      } else {
        in.wrong("architectures", "a list of strings", *it);
      }
    }
  }

  c.dtype = in.string({"torch_dtype", "dtype"});
  c.hidden_size = in.integer({"hidden_size", "d_model", "n_embd"}, 0);
  c.intermediate_size = in.integer({"intermediate_size", "ffn_hidden_size"}, 0);
  c.moe_intermediate_size = in.integer({"moe_intermediate_size"}, 0);
  c.shared_expert_intermediate_size = in.integer({"shared_expert_intermediate_size"}, 0);
  c.num_hidden_layers = in.integer({"num_hidden_layers", "n_layer", "num_layers"}, 0);
  c.num_attention_heads = in.integer({"num_attention_heads", "n_head"}, 0);
  c.num_key_value_heads = in.integer({"num_key_value_heads"}, c.num_attention_heads);
  c.head_dim = in.integer({"head_dim"}, 0);
  if (c.head_dim == 0 && c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  c.vocab_size = in.integer({"vocab_size"}, 0);
  c.num_experts = in.integer({"num_experts", "num_local_experts", "n_routed_experts"}, 0);
  c.num_experts_per_tok = in.integer({"num_experts_per_tok", "moe_topk"}, 0);
  c.n_shared_experts = in.integer({"n_shared_experts", "num_shared_experts"}, 0);
  c.first_k_dense_replace = in.integer({"first_k_dense_replace"}, 0);
  c.norm_topk_prob = in.boolean({"norm_topk_prob"}, false);
  c.tie_word_embeddings = in.boolean({"tie_word_embeddings"}, false);
  c.attention_bias = in.boolean({"attention_bias", "qkv_bias"}, false);
  c.rms_norm_eps = in.number({"rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"}, 1e-6);

  // rope_theta moved into rope_parameters in transformers 5.
  c.rope_theta = in.number({"rope_theta"}, 0.0);
  {
    std::string where;
    if (const json* rp = in.find({"rope_parameters"}, &where)) {
      if (!rp->is_object()) in.wrong(where, "an object", *rp);
      auto t = rp->find("rope_theta");
      if (c.rope_theta == 0.0 && t != rp->end() && !t->is_null()) {
        if (!t->is_number()) in.wrong(where + ".rope_theta", "a number", *t);
        c.rope_theta = t->get<double>();
      }
    }
    if (c.rope_theta == 0.0) c.rope_theta = 10000.0;
    if (const json* rs = in.find({"rope_scaling"}, &where)) {
      if (!rs->is_object()) in.wrong(where, "an object or null", *rs);
      c.rope_scaling = *rs;
    }
  }

  c.q_lora_rank = in.integer({"q_lora_rank"}, 0);
  c.kv_lora_rank = in.integer({"kv_lora_rank"}, 0);
  c.num_nextn_predict_layers = in.integer({"num_nextn_predict_layers", "mtp_num_hidden_layers"}, 0);
  c.decoder_sparse_step = in.integer({"decoder_sparse_step"}, 1);
  c.mlp_only_layers = in.int_list("mlp_only_layers");
  c.layer_types = in.string_list("layer_types");
  return c;
}

}  // namespace fp4kit
