#include "fp4kit/engine/act_quant.hpp"

#include <algorithm>
#include <cmath>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine {

void nvfp4_fake_quant_activations(float* x, size_t rows, size_t k, float gs) {
  if (k % 16 != 0)
    throw Error("activation quantization: K = " + std::to_string(k) + " is not a multiple of 16");
  if (!(gs > 0.0f) || !std::isfinite(gs))
    throw Error("activation quantization: input global scale " + std::to_string(gs) +
                " is not a positive finite number");
  const float inv_gs = 1.0f / gs;
  const float inv6 = 1.0f / 6.0f;
  parallel_for(0, rows, 64, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      float* row = x + r * k;
      for (size_t b = 0; b < k; b += 16) {
        float vmax = 0.0f;
        for (size_t i = 0; i < 16; ++i) vmax = std::max(vmax, std::fabs(row[b + i]));
        float s = gs * (vmax * inv6);
        s = std::min(s, 448.0f);
        const float sf = e4m3_to_float(float_to_e4m3(s));
        const float os = sf == 0.0f ? 0.0f : 1.0f / (sf * inv_gs);
        const float deq = sf / gs;
        for (size_t i = 0; i < 16; ++i) {
          float y = row[b + i] * os;
          y = std::clamp(y, -6.0f, 6.0f);
          row[b + i] = e2m1_to_float(float_to_e2m1(y)) * deq;
        }
      }
    }
  });
}

}  // namespace fp4kit::engine
