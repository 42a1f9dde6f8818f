// The families the engine runs. A new family: its file in this folder and one line here.
#include <fmt/format.h>

#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine {

// Defined in the families' files.
const std::vector<FamilyDef>& decoder_families();
const FamilyDef& gpt_oss_family();
const FamilyDef& llama4_family();
const FamilyDef& qwen3_next_family();
const FamilyDef& qwen3_5_moe_family();
const FamilyDef& deepseek_v2_family();
const FamilyDef& deepseek_v3_family();
const FamilyDef& glm4_moe_family();
const FamilyDef& olmoe_family();

namespace {
const std::vector<const FamilyDef*>& all() {
  static const std::vector<const FamilyDef*> list = [] {
    std::vector<const FamilyDef*> v;
    for (const FamilyDef& d : decoder_families()) v.push_back(&d);
    v.push_back(&gpt_oss_family());
    v.push_back(&llama4_family());
    v.push_back(&qwen3_next_family());
    v.push_back(&qwen3_5_moe_family());
    v.push_back(&deepseek_v2_family());
    v.push_back(&deepseek_v3_family());
    v.push_back(&glm4_moe_family());
    v.push_back(&olmoe_family());
    return v;
  }();
  return list;
}
}  // namespace

const FamilyDef* find_family(const std::string& model_type) {
  for (const FamilyDef* d : all())
    for (const std::string& t : d->model_types)
      if (t == model_type) return d;
  return nullptr;
}

const FamilyDef& family_def(Family id) {
  for (const FamilyDef* d : all())
    if (d->id == id) return *d;
  throw Error("engine: family without a definition");
}

std::string supported_model_types() {
  std::string out;
  for (const FamilyDef* d : all())
    for (const std::string& t : d->model_types) {
      if (!out.empty()) out += ", ";
      out += t;
    }
  return out;
}

}  // namespace fp4kit::engine
