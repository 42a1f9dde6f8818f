#pragma once
// Element types a checkpoint may hold, named as safetensors names them.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace fp4kit {

enum class DType : uint8_t {
  BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0,
};

// Bytes per element.
size_t dtype_size(DType t);
// The safetensors spelling ("BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Parses the safetensors spelling; nullopt for an unknown name.
std::optional<DType> parse_dtype(std::string_view name);
// True for types fp4kit can decode to float32 element by element (F16, BF16, F32, F64, F8_*).
bool dtype_is_float(DType t);

}  // namespace fp4kit
