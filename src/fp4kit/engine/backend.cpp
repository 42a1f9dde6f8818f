// The backend-independent parts of the op interface: buffer sizing, the weight upload step and
// the W4A4 linear (quantize the input, then the product).
#include "fp4kit/engine/backend.hpp"

#include "fp4kit/engine/weights.hpp"

namespace fp4kit::engine {

void Backend::ensure(Buffer& b, size_t floats) {
  if (b.floats() < floats) b = alloc(floats * sizeof(float));
}

Linear Backend::upload(LinearWeights&& w) {
  Linear L;
  L.module = std::move(w.module);
  L.n = w.n;
  L.k = w.k;
  L.w = upload(std::move(w.w));
  if (!w.bias.empty()) L.bias = upload(std::move(w.bias));
  L.act_global_scale = w.act_global_scale;
  return L;
}

Linear Backend::load_linear(const Checkpoint& ckpt, const LinearRef& ref, bool act) {
  LinearWeights w;
  if (overlay_ && overlay_->find(ref, act, w)) return upload(std::move(w));
  return upload(engine::load_linear(ckpt, ref, act));
}

Linear Backend::load_bmm_expert(const Checkpoint& ckpt, const BmmRef& ref, size_t e, bool act) {
  return upload(engine::load_bmm_expert(ckpt, ref, e, act));
}

Linear Backend::load_linear_pair(const Checkpoint&, const LinearRef&, const LinearRef&, bool) {
  return {};
}

void Backend::linear(const Linear& L, const float* x, size_t rows, float* y) {
  const float* in = x;
  Buffer own;  // concurrent callers: a scratch of this call's own
  if (L.act_global_scale > 0.0f) {
    Buffer& s = concurrent_ops() ? own : scratch_;
    ensure(s, rows * L.k);
    copy(x, rows * L.k, s.f());
    fake_quant_activations(s.f(), rows, L.k, L.act_global_scale);
    in = s.f();
  }
  gemm(in, rows, L.k, L.w.f(), L.n, y, L.bias.empty() ? nullptr : L.bias.f(), L.exact);
}

}  // namespace fp4kit::engine
