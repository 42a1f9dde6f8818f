// The backend-independent parts of the op interface: buffer sizing, the weight upload step and
// the W4A4 linear (quantize the input, then the product).
#include "fp4kit/engine/backend.hpp"

#include <algorithm>
#include <cstring>

#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine {

void Backend::ensure(Buffer& b, size_t floats) {
  if (b.floats() < floats) b = alloc(floats * sizeof(float));
}

void Backend::column_stats_add(size_t, size_t, const float*, size_t, size_t) {
  throw Error(std::string("engine: backend ") + name() + " keeps no column statistics");
}
size_t Backend::column_stats_take(std::vector<std::vector<float>>&,
                                  std::vector<std::vector<double>>&) {
  throw Error(std::string("engine: backend ") + name() + " keeps no column statistics");
}

std::unique_ptr<GroupMover> Backend::group_mover(size_t floats) {
  return std::make_unique<GroupMover>(*this, floats);
}

GroupMover::GroupMover(Backend& be, size_t floats) : be_(be) {
  for (Buffer& w : win_) w = be.alloc(std::max<size_t>(floats, 1) * sizeof(float));
}
void GroupMover::upload(int w, const float* host, size_t n) {
  if (n > win_[w].floats()) throw Error("engine: a group larger than its window (internal error)");
  be_.write(win_[w].f(), host, n);
}
void GroupMover::download(int w, float* host, size_t n) { be_.download(win_[w].f(), n, host); }

Buffer Backend::upload_u32(const std::vector<uint32_t>& host) {
  std::vector<float> bits(host.size());
  static_assert(sizeof(float) == sizeof(uint32_t));
  if (!host.empty()) std::memcpy(bits.data(), host.data(), host.size() * sizeof(uint32_t));
  return upload(std::move(bits));
}

ExpertGroups Backend::route_grouped(const float* logits, size_t T, size_t E,
                                    const RouterOptions& opt) {
  const Routes r = route(logits, T, E, opt);
  ExpertGroups g;
  g.tokens = T;
  g.k = r.k;
  g.offset.assign(E + 1, 0);
  for (const int32_t e : r.expert) ++g.offset[static_cast<size_t>(e) + 1];
  for (size_t e = 0; e < E; ++e) g.offset[e + 1] += g.offset[e];
  std::vector<size_t> next(g.offset.begin(), g.offset.end() - 1);
  std::vector<uint32_t> rows(T * r.k);
  std::vector<float> w(T * r.k);
  for (size_t t = 0; t < T; ++t)
    for (size_t j = 0; j < r.k; ++j) {
      const size_t i = next[static_cast<size_t>(r.expert[t * r.k + j])]++;
      rows[i] = static_cast<uint32_t>(t);
      w[i] = r.weight[t * r.k + j];
    }
  g.rows = upload_u32(rows);
  g.weight = upload(std::move(w));
  return g;
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

Linear Backend::take_rows(const Linear& L, const std::vector<size_t>& rows) {
  Linear out;
  out.module = L.module;
  out.n = rows.size();
  out.k = L.k;
  out.act_global_scale = L.act_global_scale;
  out.exact = L.exact;
  const Buffer r = upload_u32(std::vector<uint32_t>(rows.begin(), rows.end()));
  out.w = alloc(out.n * out.k * sizeof(float));
  gather_rows(L.w.f(), L.k, r.as<uint32_t>(), out.n, nullptr, out.w.f());
  if (!L.bias.empty()) {
    out.bias = alloc(out.n * sizeof(float));
    gather_rows(L.bias.f(), 1, r.as<uint32_t>(), out.n, nullptr, out.bias.f());
  }
  return out;
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
