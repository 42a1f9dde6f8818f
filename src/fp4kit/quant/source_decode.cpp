#include "fp4kit/quant/source_decode.hpp"

#include <fmt/core.h>

#include <cstring>

#include "fp4kit/error.hpp"
#include "fp4kit/model/packed_int.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/source_formats.hpp"
#include "fp4kit/quant/bmm_experts.hpp"

namespace fp4kit {

namespace {

// The FP8 scale grid of the entry's source tensor, checked against the tensor's shape.
Fp8BlockScales fp8_scales(const Checkpoint& ckpt, const PlanEntry& e, uint64_t n, uint64_t k) {
  if (e.source_scales.empty() || !ckpt.has(e.source_scales))
    throw Error(fmt::format("module '{}': FP8 source tensor '{}' has no block scale tensor '{}'",
                            e.name, e.source.tensor,
                            e.source_scales.empty() ? e.source.tensor + "_scale_inv"
                                                       : e.source_scales));
  const TensorInfo& si = ckpt.info(e.source_scales);
  if (si.shape.size() != 2)
    throw Error(fmt::format("FP8 block scale tensor '{}' of '{}': rank {}, expected 2-D",
                            e.source_scales, e.source.tensor, si.shape.size()));
  Fp8BlockScales s;
  s.data = ckpt.bytes(e.source_scales).data();
  s.dtype = si.dtype;
  s.grid_rows = si.shape[0];
  s.grid_cols = si.shape[1];
  s.block_rows = e.fp8_block[0];
  s.block_cols = e.fp8_block[1];
  check_fp8_block_scales(s, n, k, e.source_scales);
  return s;
}

// Float32 values as BF16 bytes (round to nearest even).
std::vector<uint8_t> to_bf16(const SourceView& v) {
  const float* f = reinterpret_cast<const float*>(v.data);
  std::vector<uint8_t> out(v.rows * v.cols * 2);
  for (uint64_t i = 0; i < v.rows * v.cols; ++i) {
    const uint16_t b = float_to_bf16(f[i]);
    std::memcpy(out.data() + 2 * i, &b, 2);
  }
  return out;
}

// A pack-quantized entry's tensors as the decoder takes them.
PackedIntWeight packed_of(const Checkpoint& ckpt, const PlanEntry& e) {
  if (e.source.expert >= 0 || e.bmm_experts > 0 || e.source_scales.empty() ||
      !ckpt.has(e.source.tensor) || !ckpt.has(e.source_scales))
    throw Error(fmt::format("module '{}': pack-quantized source '{}' with scales '{}' is not a "
                            "2-D weight of this checkpoint", e.name, e.source.tensor,
                            e.source_scales));
  PackedIntWeight w;
  w.module = e.name;
  w.packed = e.source.tensor;
  w.scale = e.source_scales;
  w.rows = e.rows;
  w.cols = e.cols;
  w.bits = e.int_bits;
  w.group = e.int_group;
  return w;
}

// The whole entry decoded into `buffer`.
SourceView decode_packed(const Checkpoint& ckpt, const PlanEntry& e, std::vector<float>& buffer) {
  const PackedIntWeight w = packed_of(ckpt, e);
  buffer.resize(w.rows * w.cols);
  decode_packed_int(ckpt, w, 0, w.rows, buffer.data());
  return {reinterpret_cast<const uint8_t*>(buffer.data()), DType::F32, w.rows, w.cols};
}

}  // namespace

SourceView decoded_view(const Checkpoint& ckpt, const PlanEntry& e, std::vector<float>& buffer) {
  if (e.encoding == SourceEncoding::PackedInt) return decode_packed(ckpt, e, buffer);
  SourceView v = source_view(ckpt, e);
  if (e.encoding == SourceEncoding::Plain) {
    if (v.dtype == DType::F8_E4M3)  // a plan that forgot the scales: never quantize raw codes
      throw Error(fmt::format("module '{}': source tensor '{}' is F8_E4M3 without block scales",
                              e.name, e.source.tensor));
    return v;
  }
  if (v.dtype != DType::F8_E4M3)
    throw Error(fmt::format("module '{}': source tensor '{}' is {}, the plan says FP8", e.name,
                            e.source.tensor, dtype_name(v.dtype)));
  if (e.source.expert >= 0)
    throw Error(fmt::format("module '{}': FP8 block-scaled fused 3-D tensor '{}' is not supported",
                            e.name, e.source.tensor));
  const TensorInfo& info = ckpt.info(e.source.tensor);
  const Fp8BlockScales s = fp8_scales(ckpt, e, info.shape[0], info.shape[1]);
  buffer.resize(v.rows * v.cols);
  fp8_block_dequantize(v.data, e.source.row_begin, v.rows, info.shape[0], info.shape[1], s,
                       buffer.data(), e.source.tensor);
  v.data = reinterpret_cast<const uint8_t*>(buffer.data());
  v.dtype = DType::F32;
  return v;
}

float source_amax(const Checkpoint& ckpt, const PlanEntry& e) {
  if (e.bmm_experts > 0) return bmm_amax(ckpt, e);
  std::vector<float> unused;
  if (e.encoding == SourceEncoding::PackedInt) {  // decoded once more: the amax of the values
    const SourceView v = decode_packed(ckpt, e, unused);
    return tensor_amax(v.data, v.dtype, v.rows, v.cols);
  }
  if (e.encoding == SourceEncoding::Plain) {
    const SourceView v = decoded_view(ckpt, e, unused);  // a view, no copy
    return tensor_amax(v.data, v.dtype, v.rows, v.cols);
  }
  const SourceView v = source_view(ckpt, e);
  if (v.dtype != DType::F8_E4M3 || e.source.expert >= 0)
    return decoded_view(ckpt, e, unused), 0.0f;  // throws the decoder's error
  const TensorInfo& info = ckpt.info(e.source.tensor);
  const Fp8BlockScales s = fp8_scales(ckpt, e, info.shape[0], info.shape[1]);
  return fp8_block_amax(v.data, e.source.row_begin, v.rows, info.shape[0], info.shape[1], s,
                        e.source.tensor);
}

std::vector<uint8_t> dequantize_to_bf16(const Checkpoint& ckpt, const PlanEntry& e,
                                        std::vector<float>& buffer) {
  if (e.encoding == SourceEncoding::Mxfp4) return bmm_dequantize_to_bf16(ckpt, e);
  if (e.encoding == SourceEncoding::PackedInt) return to_bf16(decode_packed(ckpt, e, buffer));
  const TensorInfo& info = ckpt.info(e.source.tensor);
  if (e.encoding != SourceEncoding::Fp8Block || info.dtype != DType::F8_E4M3 ||
      info.shape.size() != 2)
    throw Error(fmt::format("tensor '{}': dequantize to BF16 needs a 2-D FP8 block-scaled source "
                            "(is {}, rank {})",
                            e.source.tensor, dtype_name(info.dtype), info.shape.size()));
  const uint64_t n = info.shape[0], k = info.shape[1];
  const Fp8BlockScales s = fp8_scales(ckpt, e, n, k);
  buffer.resize(n * k);
  fp8_block_dequantize(ckpt.bytes(e.source.tensor).data(), 0, n, n, k, s, buffer.data(),
                       e.source.tensor);
  return to_bf16({reinterpret_cast<const uint8_t*>(buffer.data()), DType::F32, n, k});
}

}  // namespace fp4kit
