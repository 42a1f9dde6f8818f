#pragma once
// Rotary position embeddings as transformers computes them (rotate_half form), with the scaling
// types the supported families use: default, linear, llama3 and yarn.
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4kit::engine {

struct RopeParams {
  std::string type = "default";  // default | linear | llama3 | yarn
  double theta = 10000.0;
  int rotary_dim = 0;            // leading dims of a head that rotate (head_dim, or partial)
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  double original_max_position_embeddings = 0.0;
  // yarn
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 0.0, mscale_all_dim = 0.0;
  double attention_factor = 0.0;  // 0 = derive from factor as transformers does
  bool truncate = true;
  double max_position_embeddings = 0.0;

  // Reads rope_parameters (transformers 5) or rope_scaling (4.x) plus rope_theta.
  // Throws fp4kit::Error for a scaling type this engine does not implement.
  // `default_partial`: the family's partial_rotary_factor when config.json has none.
  static RopeParams from_config(const nlohmann::json& text_config, double rope_theta,
                                int head_dim, const std::string& label,
                                double default_partial = 1.0);
};

class Rope {
 public:
  explicit Rope(const RopeParams& p);
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  float attention_scaling() const { return attention_scaling_; }
  // Rotates `heads` heads of `head_dim` values at row x (one token at `position`), in place.
  // rotate_half form: pairs (i, i + rotary_dim / 2) of the leading rotary_dim dims; the rest of
  // each head passes unchanged.
  void apply(float* x, int heads, int head_dim, size_t position) const;
  // Llama-4's complex form (view_as_complex of [..., head_dim / 2, 2] times cis(pos * inv_freq)):
  // pairs (2i, 2i + 1) as (real, imaginary).
  void apply_interleaved(float* x, int heads, int head_dim, size_t position) const;

 private:
  // cos and sin (times attention_scaling) of position * inv_freq[i] for i < half.
  void angles(size_t position, int half, float* cs, float* sn) const;

  std::vector<float> inv_freq_;  // rotary_dim / 2 frequencies
  float attention_scaling_ = 1.0f;
};

}  // namespace fp4kit::engine
