// What a decoder layer must hold (ArchFamily::complete_layers), checked on the whole tensor list
// before planning.
#include <fmt/core.h>

#include <map>
#include <set>
#include <string>

#include "fp4kit/error.hpp"
#include "fp4kit/model/arch_table.hpp"
#include "fp4kit/model/classify.hpp"
#include "fp4kit/model/config.hpp"
#include "fp4kit/plan/plan.hpp"

namespace fp4kit {

// What each decoder layer must hold (ArchFamily::complete_layers): a missing layer, a missing
// q_proj or a missing router is an error naming the tensor, never a silently smaller model.
void check_layer_contents(const std::vector<TensorMeta>& tensors, const ModelConfig& config) {
  const ArchFamily* family = find_family(config.model_type, config.architectures);
  if (!family) family = &generic_family();
  const TensorClassifier classifier(*family, config);
  std::vector<std::string> errors;
  std::map<int64_t, std::set<Role>> roles;
  std::map<int64_t, std::string> prefix;
  for (const TensorMeta& t : tensors) {
    const TensorClass c = classifier.classify(t);
    if (c.layer < 0 || c.role == Role::Mtp || c.role == Role::Vision) continue;
    roles[c.layer].insert(c.role);
    prefix.emplace(c.layer, c.layer_prefix);
  }
  const int64_t n_layers = config.num_hidden_layers;
  std::string any_prefix = prefix.empty() ? std::string("model.layers.<L>.") : prefix.begin()->second;
  auto layer_prefix = [&](int64_t l) {
    auto it = prefix.find(l);
    if (it != prefix.end()) return it->second;
    const size_t at = any_prefix.rfind("layers.");
    return at == std::string::npos ? any_prefix
                                   : any_prefix.substr(0, at) + "layers." + std::to_string(l) + ".";
  };
  auto name_of = [&](int64_t l, Role r) {
    const std::string_view pat = pattern_of(*family, r);
    return pat.empty() ? std::string(role_name(r)) : layer_prefix(l) + std::string(pat);
  };
  for (int64_t l = 0; l < n_layers; ++l)
    if (!roles.count(l))
      errors.push_back(fmt::format("layer {} is missing: no tensor {}* (config "
                                    "num_hidden_layers = {})",
                                    l, layer_prefix(l), n_layers));
  auto any_of = [](const std::set<Role>& have, std::initializer_list<Role> rs) {
    for (Role r : rs)
      if (have.count(r)) return true;
    return false;
  };
  auto require = [&](int64_t l, const std::set<Role>& have, std::initializer_list<Role> rs,
                     const char* part) {
    for (Role r : rs)
      if (!have.count(r))
        errors.push_back(fmt::format("layer {}: {} is incomplete: {} is missing", l, part,
                                      name_of(l, r)));
  };
  for (const auto& [l, have] : roles) {
    const bool mla = any_of(have, {Role::MlaKVA, Role::MlaKVB, Role::MlaQA, Role::MlaQB});
    if (mla) {
      require(l, have, {Role::MlaKVA, Role::MlaKVB, Role::AttnO}, "MLA attention");
      if (!have.count(Role::AttnQ)) require(l, have, {Role::MlaQA, Role::MlaQB}, "MLA attention");
    } else if (any_of(have, {Role::AttnQ, Role::AttnK, Role::AttnV, Role::AttnO})) {
      require(l, have, {Role::AttnQ, Role::AttnK, Role::AttnV, Role::AttnO}, "attention");
    }
    if (any_of(have, {Role::MlpGate, Role::MlpUp, Role::MlpDown}))
      require(l, have, {Role::MlpGate, Role::MlpUp, Role::MlpDown}, "the dense MLP");
    if (any_of(have, {Role::SharedGate, Role::SharedUp, Role::SharedDown}))
      require(l, have, {Role::SharedGate, Role::SharedUp, Role::SharedDown}, "the shared expert");
    const bool experts = any_of(have, {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown,
                                       Role::FusedExpertGateUp, Role::FusedExpertDown,
                                       Role::BmmExpertGateUp, Role::BmmExpertDown});
    if (experts) require(l, have, {Role::Router}, "the MoE block");
    if (!family->complete_layers) continue;
    if (!mla && !any_of(have, {Role::AttnQ, Role::AttnK, Role::AttnV, Role::AttnO,
                               Role::LinearAttn}))
      errors.push_back(fmt::format("layer {}: no attention ({} ...) and no linear attention",
                                    l, name_of(l, Role::AttnQ)));
    if (!experts && !any_of(have, {Role::MlpGate, Role::MlpUp, Role::MlpDown}))
      errors.push_back(fmt::format("layer {}: no MLP ({} ...) and no routed experts", l,
                                    name_of(l, Role::MlpGate)));
  }
  if (errors.empty()) return;
  std::string msg = fmt::format("plan: {} problem(s) with what the layers hold:", errors.size());
  constexpr size_t kMaxListed = 200;
  for (size_t i = 0; i < errors.size() && i < kMaxListed; ++i) msg += "\n  - " + errors[i];
  if (errors.size() > kMaxListed) msg += fmt::format("\n  ... and {} more", errors.size() - kMaxListed);
  throw Error(msg);
}

}  // namespace fp4kit
