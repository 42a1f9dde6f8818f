#include "fp4kit/engine/weights.hpp"

#include <cmath>

#include <fmt/format.h>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/packed_int.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/parallel.hpp"
#include "fp4kit/numeric/source_formats.hpp"

namespace fp4kit::engine {
namespace {

// A scalar F32 tensor stored as [] or [1] (format A writes 0-d, format B [1]).
float scalar_f32(const Checkpoint& c, const std::string& name) {
  const auto& t = c.info(name);
  if (t.dtype != DType::F32 || t.numel() != 1)
    throw Error(fmt::format("{}: tensor {} must be a single F32 value (got {} with {} elements)",
                            c.dir().string(), name, dtype_name(t.dtype), t.numel()));
  float v;
  decode_to_f32(c.bytes(name).data(), DType::F32, 1, &v);
  return v;
}

// A per-tensor scale (weight_scale_2, input_scale, weight/input global scale): the decoded
// weights or activations are only meaningful with a positive, finite value; a zero would give
// all-zero (or, inverted, infinite) weights far from where the damage shows.
float positive_scale(const Checkpoint& c, const std::string& name) {
  const float v = scalar_f32(c, name);
  if (!(v > 0.0f) || !std::isfinite(v))
    throw Error(fmt::format("{}: tensor {} = {} is not positive and finite (a per-tensor scale; "
                            "the checkpoint is damaged or was not written by a quantizer)",
                            c.file_of(name).path().string(), name, v));
  return v;
}

void check_nvfp4_shapes(const Checkpoint& c, const std::string& packed, const std::string& scale,
                        uint64_t n, uint64_t k) {
  const auto& p = c.info(packed);
  const auto& s = c.info(scale);
  if (p.dtype != DType::U8 || p.shape.size() != 2 || p.shape[0] != n || p.shape[1] * 2 != k)
    throw Error(fmt::format("{}: {} must be U8 [{}, {}]", c.dir().string(), packed, n, k / 2));
  if ((s.dtype != DType::F8_E4M3 && s.dtype != DType::U8) || s.shape.size() != 2 ||
      s.shape[0] != n || s.shape[1] != k / 16)
    throw Error(fmt::format("{}: {} must be F8_E4M3 [{}, {}]", c.dir().string(), scale, n,
                            k / 16));
}

}  // namespace

LinearWeights load_linear(const Checkpoint& c, const LinearRef& ref, bool activations) {
  std::vector<float> w(ref.rows * ref.cols);
  LinearWeights L = load_linear_into(c, ref, activations, w.data());
  L.w = std::move(w);
  return L;
}

LinearWeights load_linear_into(const Checkpoint& c, const LinearRef& ref, bool activations,
                               float* w) {
  const StoredLinear s = describe_linear(c, ref, activations);
  LinearWeights L;
  L.module = ref.module;
  L.n = ref.rows;
  L.k = ref.cols;
  decode_linear(c, s, L.n, L.k, w);
  L.nvfp4 = s.nvfp4;
  L.act_global_scale = s.act_global_scale;
  if (!s.release.empty()) c.release(s.release);
  if (s.bias) L.bias = load_vector(c, ref.module + ".bias", L.n);
  return L;
}

StoredLinear describe_linear(const Checkpoint& c, const LinearRef& ref, bool activations) {
  StoredLinear S;
  const size_t n = ref.rows, k = ref.cols;
  const std::string& m = ref.module;
  if (!ref.tensor.empty()) {
    // A row range of a fused 3-D expert tensor (always high precision: loaders refuse quantized
    // fused experts).
    const auto& t = c.info(ref.tensor);
    if (!dtype_is_float(t.dtype))
      throw Error(fmt::format("{}: fused expert tensor {} has dtype {}; only float dtypes are "
                              "supported for fused experts", c.dir().string(), ref.tensor,
                              dtype_name(t.dtype)));
    S.tensor = ref.tensor;
    S.dtype = t.dtype;
    S.offset = ref.row_begin * ref.cols * dtype_size(t.dtype);
    return S;
  }
  if (is_packed_int(c, m)) {
    // compressed-tensors pack-quantized INT4/INT8 (Kimi-K2 Thinking / K2.5 experts): the values
    // calibration must see are q * scale of the group, decoded exactly in float32 (on the host:
    // a backend without its own decoding of this kind hands it back to decode_linear).
    S.packed_int = packed_int_weight(c, m);
    const PackedIntWeight& p = S.packed_int;
    if (p.rows != n || p.cols != k)
      throw Error(fmt::format("{}: {} describes a [{}, {}] weight, the model needs [{}, {}]",
                              c.dir().string(), p.shape_tensor, p.rows, p.cols, n, k));
    S.kind = StoredLinear::Kind::PackedInt;
    S.tensor = S.release = p.packed;
    S.scales = p.scale;
  } else if (c.has(m + ".weight_packed")) {  // format B (compressed-tensors NVFP4)
    check_nvfp4_shapes(c, m + ".weight_packed", m + ".weight_scale", n, k);
    S.kind = StoredLinear::Kind::Nvfp4Div;
    S.tensor = S.release = m + ".weight_packed";
    S.scales = m + ".weight_scale";
    S.s2 = positive_scale(c, m + ".weight_global_scale");
    S.nvfp4 = true;
    if (activations && c.has(m + ".input_global_scale"))
      S.act_global_scale = positive_scale(c, m + ".input_global_scale");
  } else {
    const std::string wname = m + ".weight";
    const auto& t = c.info(wname);
    S.tensor = S.release = wname;
    if (t.dtype == DType::U8 && c.has(m + ".weight_scale")) {  // format A (ModelOpt)
      check_nvfp4_shapes(c, wname, m + ".weight_scale", n, k);
      S.kind = StoredLinear::Kind::Nvfp4;
      S.scales = m + ".weight_scale";
      S.s2 = positive_scale(c, m + ".weight_scale_2");
      S.nvfp4 = true;
      if (activations && c.has(m + ".input_scale"))
        S.act_global_scale = 1.0f / positive_scale(c, m + ".input_scale");  // vLLM: input_scale_inv
    } else if (t.dtype == DType::F8_E4M3 && c.has(m + ".weight_scale_inv") &&
               t.shape.size() == 2 && t.shape[0] == n && t.shape[1] == k) {
      // FP8 with 128x128 block scales (DeepSeek-V3, Qwen3-FP8; spec 8): the values calibration
      // must see are fp8 * scale_inv of the block. A grid that is not [ceil(n/128), ceil(k/128)]
      // (another block size) is an error, never a silent misread.
      const std::string sname = m + ".weight_scale_inv";
      const auto& si = c.info(sname);
      if (si.shape.size() != 2)
        throw Error(fmt::format("{}: {} must be 2-D", c.dir().string(), sname));
      S.kind = StoredLinear::Kind::Fp8Block;
      S.scales = sname;
      S.grid = Fp8BlockScales{c.bytes(sname).data(), si.dtype, si.shape[0], si.shape[1], 128, 128};
      check_fp8_block_scales(S.grid, n, k, sname);
    } else {
      if (!dtype_is_float(t.dtype) || c.has(m + ".weight_scale_inv") ||
          (c.has(m + ".weight_scale") && t.dtype != DType::U8))
        throw Error(fmt::format("{}: {} has dtype {} with scales the engine cannot decode "
                                "(supported: BF16/F16/F32 and NVFP4)", c.dir().string(), wname,
                                dtype_name(t.dtype)));
      if (t.shape.size() != 2 || t.shape[0] != n || t.shape[1] != k)
        throw Error(fmt::format("{}: {} has an unexpected shape", c.dir().string(), wname));
      S.dtype = t.dtype;
    }
  }
  S.bias = c.has(m + ".bias");
  return S;
}

void decode_linear(const Checkpoint& c, const StoredLinear& s, size_t n, size_t k, float* w) {
  const uint8_t* bytes = c.bytes(s.tensor).data();
  switch (s.kind) {
    case StoredLinear::Kind::Float:
      decode_to_f32(bytes + s.offset, s.dtype, n * k, w);
      break;
    case StoredLinear::Kind::Nvfp4:
      nvfp4_dequantize(bytes, c.bytes(s.scales).data(), n, k, s.s2, w);
      break;
    case StoredLinear::Kind::Nvfp4Div: {
      const uint8_t* scales = c.bytes(s.scales).data();
      // vLLM's dequantize_to_dtype: e2m1 * (fp32(scale) / global_scale).
      const size_t nb = k / 16;
      parallel_for(0, n, 64, [&](size_t r0, size_t r1) {
        for (size_t r = r0; r < r1; ++r) {
          for (size_t b = 0; b < nb; ++b) {
            const float sc = e4m3_to_float(scales[r * nb + b]) / s.s2;
            for (size_t i = 0; i < 16; ++i) {
              const size_t col = b * 16 + i;
              const uint8_t byte = bytes[r * (k / 2) + col / 2];
              const uint8_t code = (col % 2 == 0) ? (byte & 0x0F) : (byte >> 4);
              w[r * k + col] = e2m1_to_float(code) * sc;
            }
          }
        }
      });
      break;
    }
    case StoredLinear::Kind::Fp8Block:
      fp8_block_dequantize(bytes, 0, n, n, k, s.grid, w, s.tensor);
      break;
    case StoredLinear::Kind::PackedInt:
      decode_packed_int(c, s.packed_int, 0, n, w);
      break;
  }
}

LinearWeights load_bmm_expert(const Checkpoint& c, const BmmRef& ref, size_t expert,
                              bool activations) {
  const StoredBmmExpert s = describe_bmm_expert(c, ref, expert, activations);
  LinearWeights L;
  L.module = ref.module;
  L.n = ref.n;
  L.k = ref.k;
  L.w.resize(L.n * L.k);
  decode_bmm_expert(c, s, L.n, L.k, L.w.data());
  L.nvfp4 = s.nvfp4;
  L.act_global_scale = s.act_global_scale;
  L.bias = load_bmm_expert_bias(c, ref, expert);
  return L;
}

StoredBmmExpert describe_bmm_expert(const Checkpoint& c, const BmmRef& ref, size_t expert,
                                    bool activations) {
  StoredBmmExpert S;
  S.storage = ref.storage;
  const std::string& m = ref.module;
  const size_t n = ref.n, k = ref.k;
  switch (ref.storage) {
    case BmmRef::Storage::Mxfp4: {
      // [E, N, K/32, 16] + [E, N, K/32]: expert e's N * K/32 blocks are contiguous.
      const size_t groups = n * (k / kMxfp4Block);
      S.tensor = m + "_blocks";
      S.scales = m + "_scales";
      S.offset = expert * groups * 16;
      S.scales_offset = expert * groups;
      if (c.info(S.tensor).nbytes() < S.offset + groups * 16 ||
          c.info(S.scales).nbytes() < S.scales_offset + groups)
        throw Error(fmt::format("{}: {} / {} hold no expert {} of [{}, {}]", c.dir().string(),
                                S.tensor, S.scales, expert, n, k));
      break;
    }
    case BmmRef::Storage::Float: {
      const auto& t = c.info(m);
      S.tensor = m;
      S.dtype = t.dtype;
      S.offset = expert * k * n * dtype_size(t.dtype);  // source[e] is [K, N]
      break;
    }
    case BmmRef::Storage::Nvfp4: {
      // Spec 4: the transposes of [N, K/2] codes and [N, K/16] scales, per expert.
      const auto& sc = c.info(m + "_weight_scale");
      if (sc.shape.size() != 3 || sc.shape[1] * 16 != k || sc.shape[2] != n)
        throw Error(fmt::format("{}: {}_weight_scale must be [E, {}, {}]", c.dir().string(), m,
                                k / 16, n));
      S.tensor = m;
      S.scales = m + "_weight_scale";
      S.offset = expert * (k / 2) * n;
      S.scales_offset = expert * (k / 16) * n;
      S.s2 = positive_scale(c, m + "_weight_scale_2");
      S.nvfp4 = true;
      if (activations && c.has(m + "_input_scale"))
        S.act_global_scale = 1.0f / positive_scale(c, m + "_input_scale");
      break;
    }
  }
  return S;
}

void decode_bmm_expert(const Checkpoint& c, const StoredBmmExpert& s, size_t n, size_t k,
                       float* w) {
  const uint8_t* bytes = c.bytes(s.tensor).data() + s.offset;
  switch (s.storage) {
    case BmmRef::Storage::Mxfp4:
      mxfp4_dequantize(bytes, c.bytes(s.scales).data() + s.scales_offset,
                       n * (k / kMxfp4Block), w, s.scales);
      break;
    case BmmRef::Storage::Float: {
      std::vector<float> kn(k * n);
      decode_to_f32(bytes, s.dtype, k * n, kn.data());
      parallel_for(0, n, 64, [&](size_t r0, size_t r1) {
        for (size_t r = r0; r < r1; ++r)
          for (size_t col = 0; col < k; ++col) w[r * k + col] = kn[col * n + r];
      });
      break;
    }
    case BmmRef::Storage::Nvfp4: {
      const uint8_t* scales = c.bytes(s.scales).data() + s.scales_offset;
      std::vector<uint8_t> packed(n * (k / 2)), sc_nk(n * (k / 16));
      for (size_t j = 0; j < k / 2; ++j)
        for (size_t r = 0; r < n; ++r) packed[r * (k / 2) + j] = bytes[j * n + r];
      for (size_t j = 0; j < k / 16; ++j)
        for (size_t r = 0; r < n; ++r) sc_nk[r * (k / 16) + j] = scales[j * n + r];
      nvfp4_dequantize(packed.data(), sc_nk.data(), n, k, s.s2, w);
      break;
    }
  }
}

std::vector<float> load_bmm_expert_bias(const Checkpoint& c, const BmmRef& ref, size_t expert) {
  const std::string bname = ref.module + "_bias";
  if (!c.has(bname)) return {};
  const auto& b = c.info(bname);
  const size_t n = ref.n;
  if (!dtype_is_float(b.dtype) || b.shape.size() != 2 || b.shape[1] != n || expert >= b.shape[0])
    throw Error(fmt::format("{}: {} must be a float [E, {}] tensor", c.dir().string(), bname, n));
  std::vector<float> bias(n);
  decode_to_f32(c.bytes(bname).data() + expert * n * dtype_size(b.dtype), b.dtype, n, bias.data());
  return bias;
}

LinearWeights take_rows(const LinearWeights& w, const std::vector<size_t>& rows) {
  LinearWeights out;
  out.module = w.module;
  out.n = rows.size();
  out.k = w.k;
  out.act_global_scale = w.act_global_scale;
  out.nvfp4 = w.nvfp4;
  out.w.resize(out.n * out.k);
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(w.w.data() + rows[i] * w.k, w.k, out.w.data() + i * w.k);
  if (!w.bias.empty())
    for (size_t r : rows) out.bias.push_back(w.bias[r]);
  return out;
}

std::vector<float> load_vector(const Checkpoint& c, const std::string& name, size_t expected) {
  const auto& t = c.info(name);
  if (!dtype_is_float(t.dtype) || t.numel() != expected)
    throw Error(fmt::format("{}: tensor {} must be a float vector of {} elements (has {} {})",
                            c.dir().string(), name, expected, t.numel(), dtype_name(t.dtype)));
  std::vector<float> v(expected);
  decode_to_f32(c.bytes(name).data(), t.dtype, expected, v.data());
  return v;
}

void gather_rows(const Checkpoint& c, const std::string& name, const int32_t* ids, size_t count,
                 size_t hidden, float* out) {
  const auto& t = c.info(name);
  if (!dtype_is_float(t.dtype) || t.shape.size() != 2 || t.shape[1] != hidden)
    throw Error(fmt::format("{}: embedding {} must be a float [vocab, {}] tensor",
                            c.dir().string(), name, hidden));
  const uint64_t vocab = t.shape[0];
  const size_t es = dtype_size(t.dtype);
  const uint8_t* base = c.bytes(name).data();
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] < 0 || static_cast<uint64_t>(ids[i]) >= vocab)
      throw Error(fmt::format("token id {} at position {} is outside the vocabulary of {} ({})",
                              ids[i], i, vocab, c.dir().string()));
    decode_to_f32(base + static_cast<uint64_t>(ids[i]) * hidden * es, t.dtype, hidden,
                  out + i * hidden);
  }
}

}  // namespace fp4kit::engine
