// RoPE frequencies, following transformers' modeling_rope_utils (the _compute_*_parameters
// functions) step by step: inverse frequencies are computed in float32 as torch does, then
// cos/sin of position * inv_freq (a float32 product) times attention_scaling.
#include "fp4kit/engine/rope.hpp"

#include <algorithm>
#include <cmath>

#include "fp4kit/error.hpp"

namespace fp4kit::engine {
namespace {

double num(const nlohmann::json& j, const char* key, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw Error(std::string("rope parameter '") + key + "' is not a number");
  return it->get<double>();
}

std::vector<float> default_inv_freq(double theta, int dim) {
  std::vector<float> f(static_cast<size_t>(dim / 2));
  for (int i = 0; i < dim / 2; ++i) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in float32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(dim);
    const float p = std::pow(static_cast<float>(theta), expo);
    f[static_cast<size_t>(i)] = 1.0f / p;
  }
  return f;
}

double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

}  // namespace

RopeParams RopeParams::from_config(const nlohmann::json& cfg, double rope_theta, int head_dim,
                                   const std::string& label, double default_partial) {
  RopeParams p;
  p.theta = rope_theta;
  p.rotary_dim = head_dim;
  p.max_position_embeddings = num(cfg, "max_position_embeddings", 0.0);
  nlohmann::json rs;
  auto rp = cfg.find("rope_parameters");
  if (rp != cfg.end() && rp->is_object()) rs = *rp;
  auto sc = cfg.find("rope_scaling");
  if ((rs.is_null() || !rs.contains("rope_type")) && sc != cfg.end() && sc->is_object()) rs = *sc;
  if (rs.is_object()) {
    if (rs.contains("rope_theta") && rs["rope_theta"].is_number())
      p.theta = rs["rope_theta"].get<double>();
    std::string type;
    if (rs.contains("rope_type") && rs["rope_type"].is_string()) type = rs["rope_type"];
    else if (rs.contains("type") && rs["type"].is_string()) type = rs["type"];
    if (!type.empty()) p.type = type;
    p.factor = num(rs, "factor", 0.0);  // 0 = absent (yarn derives it)
    p.low_freq_factor = num(rs, "low_freq_factor", 1.0);
    p.high_freq_factor = num(rs, "high_freq_factor", 4.0);
    p.original_max_position_embeddings = num(rs, "original_max_position_embeddings", 0.0);
    p.beta_fast = num(rs, "beta_fast", 32.0);
    p.beta_slow = num(rs, "beta_slow", 1.0);
    p.mscale = num(rs, "mscale", 0.0);
    p.mscale_all_dim = num(rs, "mscale_all_dim", 0.0);
    p.attention_factor = num(rs, "attention_factor", 0.0);
    if (rs.contains("truncate") && rs["truncate"].is_boolean()) p.truncate = rs["truncate"];
  }
  // Partial rotary (Qwen3-Next/3.5, GLM): the leading int(head_dim * factor) dims of each head
  // rotate; rope_parameters (transformers 5) or the top level (4.x).
  double partial = num(cfg, "partial_rotary_factor", default_partial);
  if (rs.is_object()) partial = num(rs, "partial_rotary_factor", partial);
  const int rd = static_cast<int>(head_dim * partial);
  if (!(partial > 0.0 && partial <= 1.0) || rd < 2 || rd % 2 != 0)
    throw Error(label + ": partial_rotary_factor " + std::to_string(partial) + " gives " +
                std::to_string(rd) + " rotary dims of head_dim " + std::to_string(head_dim) +
                " (must be even and at least 2)");
  p.rotary_dim = rd;
  if (p.type != "yarn" && p.factor == 0.0) p.factor = 1.0;
  if (p.type != "default" && p.type != "linear" && p.type != "llama3" && p.type != "yarn")
    throw Error(label + ": rope type '" + p.type +
                "' is not supported by the engine (supported: default, linear, llama3, yarn)");
  return p;
}

Rope::Rope(const RopeParams& p) {
  const int dim = p.rotary_dim;
  inv_freq_ = default_inv_freq(p.theta, dim);
  if (p.type == "linear") {
    for (float& f : inv_freq_) f = f / static_cast<float>(p.factor);
  } else if (p.type == "llama3") {
    const double old_ctx = p.original_max_position_embeddings;
    const double low_wavelen = old_ctx / p.low_freq_factor;
    const double high_wavelen = old_ctx / p.high_freq_factor;
    const float factor = static_cast<float>(p.factor);
    for (float& f : inv_freq_) {
      const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
      float out = wavelen > low_wavelen ? f / factor : f;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        const float smooth = (static_cast<float>(old_ctx) / wavelen -
                              static_cast<float>(p.low_freq_factor)) /
                             static_cast<float>(p.high_freq_factor - p.low_freq_factor);
        out = (1.0f - smooth) * out / factor + smooth * out;
      }
      f = out;
    }
  } else if (p.type == "yarn") {
    double orig = p.original_max_position_embeddings > 0 ? p.original_max_position_embeddings
                                                         : p.max_position_embeddings;
    // transformers: a missing factor is max_position_embeddings / original_max_position_embeddings.
    double factor = p.factor > 0.0 ? p.factor : p.max_position_embeddings / orig;
    double attention = p.attention_factor;
    if (attention == 0.0) {
      if (p.mscale != 0.0 && p.mscale_all_dim != 0.0)
        attention = yarn_get_mscale(factor, p.mscale) / yarn_get_mscale(factor, p.mscale_all_dim);
      else
        attention = yarn_get_mscale(factor, 1.0);
    }
    auto correction_dim = [&](double rot) {
      return (dim * std::log(orig / (rot * 2.0 * M_PI))) / (2.0 * std::log(p.theta));
    };
    double low = correction_dim(p.beta_fast), high = correction_dim(p.beta_slow);
    if (p.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;
    for (size_t i = 0; i < inv_freq_.size(); ++i) {
      const float pos_freq = std::pow(static_cast<float>(p.theta),
                                      static_cast<float>(2 * i) / static_cast<float>(dim));
      const float extrapolation = 1.0f / pos_freq;
      const float interpolation = 1.0f / (static_cast<float>(factor) * pos_freq);
      float ramp = (static_cast<float>(i) - static_cast<float>(low)) /
                   (static_cast<float>(high) - static_cast<float>(low));
      ramp = std::clamp(ramp, 0.0f, 1.0f);
      const float extra_factor = 1.0f - ramp;
      inv_freq_[i] = interpolation * (1.0f - extra_factor) + extrapolation * extra_factor;
    }
    attention_scaling_ = static_cast<float>(attention);
  }
}

void Rope::angles(size_t position, int half, float* cs, float* sn) const {
  // cos/sin of a float32 angle, evaluated in double and rounded: torch's float cos is accurate
  // to about one ulp, so both agree within float rounding.
  const float pos = static_cast<float>(position);
  for (int i = 0; i < half; ++i) {
    const float ang = pos * inv_freq_[static_cast<size_t>(i)];
    cs[i] = static_cast<float>(std::cos(static_cast<double>(ang))) * attention_scaling_;
    sn[i] = static_cast<float>(std::sin(static_cast<double>(ang))) * attention_scaling_;
  }
}

void Rope::apply_interleaved(float* x, int heads, int head_dim, size_t position) const {
  const int half = static_cast<int>(inv_freq_.size());
  float cs[512], sn[512];
  angles(position, half, cs, sn);  // torch.polar(1, pos * inv_freq) * attention_scaling
  for (int h = 0; h < heads; ++h) {
    float* v = x + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      // (a + ib)(c + is) = (ac - bs) + i(as + bc)
      const float a = v[2 * i], b = v[2 * i + 1];
      v[2 * i] = a * cs[i] - b * sn[i];
      v[2 * i + 1] = a * sn[i] + b * cs[i];
    }
  }
}

void Rope::apply(float* x, int heads, int head_dim, size_t position) const {
  const int half = static_cast<int>(inv_freq_.size());  // rotary_dim / 2
  float cs[512], sn[512];
  angles(position, half, cs, sn);
  for (int h = 0; h < heads; ++h) {
    float* v = x + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cs[i] - b * sn[i];
      v[i + half] = b * cs[i] + a * sn[i];
    }
  }
}

}  // namespace fp4kit::engine
