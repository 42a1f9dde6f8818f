#include "fp4kit/quant/source_view.hpp"

#include <fmt/core.h>

#include "fp4kit/error.hpp"

namespace fp4kit {

SourceView source_view(const Checkpoint& ckpt, const PlanEntry& entry) {
  const SourceSlice& s = entry.source;
  const TensorInfo& info = ckpt.info(s.tensor);
  const auto bytes = ckpt.bytes(s.tensor);
  const size_t esize = dtype_size(info.dtype);
  SourceView v;
  v.dtype = info.dtype;
  v.cols = entry.cols;
  v.rows = s.row_end - s.row_begin;
  auto bad = [&](const char* what) {
    return Error(fmt::format("tensor '{}' (shape rank {}) cannot give module '{}' [{} x {}]: {}",
                             s.tensor, info.shape.size(), entry.name, entry.rows, entry.cols,
                             what));
  };
  if (v.rows != entry.rows) throw bad("row range does not match the planned rows");
  uint64_t matrix_rows = 0, offset_rows = s.row_begin;
  if (s.expert < 0) {
    if (info.shape.size() != 2) throw bad("expected a 2-D tensor");
    matrix_rows = info.shape[0];
    if (info.shape[1] != entry.cols) throw bad("column count differs");
  } else {
    if (info.shape.size() != 3) throw bad("expected a 3-D fused expert tensor");
    if (static_cast<uint64_t>(s.expert) >= info.shape[0]) throw bad("expert index out of range");
    matrix_rows = info.shape[1];
    if (info.shape[2] != entry.cols) throw bad("column count differs");
    offset_rows += static_cast<uint64_t>(s.expert) * matrix_rows;
  }
  if (s.row_end > matrix_rows || s.row_begin > s.row_end) throw bad("row range out of bounds");
  const uint64_t offset = offset_rows * entry.cols * esize;
  const uint64_t size = v.rows * v.cols * esize;
  if (offset + size > bytes.size()) throw bad("slice past the end of the tensor data");
  v.data = bytes.data() + offset;
  return v;
}

}  // namespace fp4kit
