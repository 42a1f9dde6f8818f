// The families the engine runs. A new family: its file in this folder and one line here.
#include <fmt/format.h>

#include "fp4kit/engine/families/family.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine {

// Defined in the families' files.
std::vector<FamilyDef> decoder_families();
FamilyDef gpt_oss_family();
FamilyDef llama4_family();
FamilyDef qwen3_next_family();
FamilyDef qwen3_5_moe_family();
FamilyDef deepseek_v2_family();
FamilyDef deepseek_v3_family();
FamilyDef glm4_moe_family();
FamilyDef olmoe_family();

namespace {
const std::vector<FamilyDef>& all() {
  static const std::vector<FamilyDef> list = [] {
    std::vector<FamilyDef> v = decoder_families();
    for (FamilyDef (*f)() : {gpt_oss_family, llama4_family, qwen3_next_family, qwen3_5_moe_family,
                             deepseek_v2_family, deepseek_v3_family, glm4_moe_family,
                             olmoe_family})
      v.push_back(f());
    return v;
  }();
  return list;
}
}  // namespace

const FamilyDef* find_family(const std::string& model_type) {
  for (const FamilyDef& d : all())
    for (const std::string& t : d.model_types)
      if (t == model_type) return &d;
  return nullptr;
}

const FamilyDef& family_def(Family id) {
  for (const FamilyDef& d : all())
    if (d.id == id) return d;
  throw Error("engine: family without a definition");
}

std::string supported_model_types() {
  std::string out;
  for (const FamilyDef& d : all())
    for (const std::string& t : d.model_types) {
      if (!out.empty()) out += ", ";
      out += t;
    }
  return out;
}

}  // namespace fp4kit::engine
