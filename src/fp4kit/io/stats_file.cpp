// The activation statistics file (format in stats_file.hpp): a plain safetensors file written
// through the checkpoint writer (into a private temporary directory, then renamed into place,
// so a crash never leaves a half-written stats file under the final name).
#include "fp4kit/io/stats_file.hpp"

#include <cmath>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

#include "fp4kit/error.hpp"
#include "fp4kit/io/safetensors_reader.hpp"
#include "fp4kit/io/safetensors_writer.hpp"

namespace fp4kit {
namespace fs = std::filesystem;
namespace {

constexpr const char* kAmax = ".input_amax";
constexpr const char* kSqSum = ".input_sq_sum";
constexpr const char* kCount = ".token_count";
constexpr const char* kRouted = ".routed_tokens";
constexpr const char* kHess = ".input_hessian_blocks";
constexpr const char* kXtx = ".input_xtx";

bool ends_with(const std::string& s, const char* suffix, std::string* stem) {
  const size_t n = std::strlen(suffix);
  if (s.size() <= n || s.compare(s.size() - n, n, suffix) != 0) return false;
  *stem = s.substr(0, s.size() - n);
  return true;
}

template <class T>
std::span<const uint8_t> as_bytes(const T* p, size_t n) {
  return {reinterpret_cast<const uint8_t*>(p), n * sizeof(T)};
}

}  // namespace

void write_stats_file(const fs::path& path, const ActivationStats& st) {
  // Tensors in name order (std::map keys are sorted, and so is the merged list below).
  struct Item {
    TensorSpec spec;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Item> items;
  for (const auto& [m, a] : st.input_amax) {
    if (!(a >= 0.0f) || !std::isfinite(a))
      throw Error(fmt::format("{}: input_amax of {} is {} (must be finite and >= 0)",
                              path.string(), m, a));
    auto b = as_bytes(&a, 1);
    items[m + kAmax] = {{m + kAmax, DType::F32, {}}, {b.begin(), b.end()}};
  }
  for (const auto& [m, v] : st.input_sq_sum) {
    auto b = as_bytes(v.data(), v.size());
    items[m + kSqSum] = {{m + kSqSum, DType::F64, {v.size()}}, {b.begin(), b.end()}};
  }
  for (const auto& [m, v] : st.hessian_blocks) {
    if (v.empty() || v.size() % 256 != 0)
      throw Error(fmt::format("{}: Hessian blocks of {} have {} values (not a multiple of 256)",
                              path.string(), m, v.size()));
    auto b = as_bytes(v.data(), v.size());
    items[m + kHess] = {{m + kHess, DType::F64, {v.size() / 256, 16, 16}}, {b.begin(), b.end()}};
  }
  for (const auto& [m, v] : st.xtx) {
    const auto k = static_cast<size_t>(std::llround(std::sqrt(static_cast<double>(v.size()))));
    if (v.empty() || k * k != v.size())
      throw Error(fmt::format("{}: X^T X of {} has {} values (not K x K)", path.string(), m, v.size()));
    auto b = as_bytes(v.data(), v.size());
    items[m + kXtx] = {{m + kXtx, DType::F64, {k, k}}, {b.begin(), b.end()}};
  }
  for (const auto& [m, c] : st.token_count) {
    auto b = as_bytes(&c, 1);
    items[m + kCount] = {{m + kCount, DType::I64, {}}, {b.begin(), b.end()}};
  }
  for (const auto& [e, c] : st.routed_tokens) {
    auto b = as_bytes(&c, 1);
    items[e + kRouted] = {{e + kRouted, DType::I64, {}}, {b.begin(), b.end()}};
  }
  std::vector<TensorSpec> specs;
  for (const auto& [name, it] : items) specs.push_back(it.spec);
  std::map<std::string, std::string> meta = st.metadata;
  meta["format"] = "fp4kit-stats";
  meta["version"] = st.hessian_blocks.empty() && st.xtx.empty() ? "1" : "2";

  const fs::path tmpdir = path.string() + ".partial.d";
  const fs::path partial = path.string() + ".partial";
  std::error_code ec;
  fs::remove_all(tmpdir, ec);
  fs::create_directories(tmpdir);
  try {
    CheckpointWriter w(tmpdir, specs, ~0ull >> 1, meta);
    for (const auto& [name, it] : items) w.write(name, it.bytes);
    w.finish();
    fs::rename(tmpdir / "model.safetensors", partial);
    fs::rename(partial, path);
  } catch (...) {
    fs::remove_all(tmpdir, ec);
    fs::remove(partial, ec);
    throw;
  }
  fs::remove_all(tmpdir, ec);
}

ActivationStats read_stats_file(const fs::path& path) {
  if (!fs::exists(path)) throw Error(path.string() + ": stats file not found");
  auto f = SafetensorsFile::open(path);
  ActivationStats st;
  st.metadata = f->metadata();
  auto fmt_it = st.metadata.find("format");
  if (fmt_it == st.metadata.end() || fmt_it->second != "fp4kit-stats")
    throw Error(path.string() + ": not an fp4kit stats file (metadata format != \"fp4kit-stats\")");
  auto ver = st.metadata.find("version");
  if (ver == st.metadata.end() || (ver->second != "1" && ver->second != "2"))
    throw Error(path.string() + ": unsupported stats file version \"" +
                (ver == st.metadata.end() ? std::string() : ver->second) +
                "\" (this fp4kit reads \"1\" and \"2\"); rerun fp4kit calibrate");
  for (const TensorInfo& t : f->tensors()) {
    auto bytes = f->bytes(t);
    std::string stem;
    auto need = [&](DType dt, size_t rank, const char* what) {
      if (t.dtype != dt || t.shape.size() != rank)
        throw Error(fmt::format("{}: tensor {} must be {} {} (is {} with {} dimensions)",
                                path.string(), t.name, dtype_name(dt), what,
                                dtype_name(t.dtype), t.shape.size()));
    };
    if (ends_with(t.name, kAmax, &stem)) {
      need(DType::F32, 0, "[]");
      float a;
      std::memcpy(&a, bytes.data(), sizeof a);
      if (!(a >= 0.0f) || !std::isfinite(a))
        throw Error(fmt::format("{}: {} = {} (must be finite and >= 0)", path.string(), t.name, a));
      st.input_amax[stem] = a;
    } else if (ends_with(t.name, kSqSum, &stem)) {
      need(DType::F64, 1, "[K]");
      std::vector<double> v(t.shape[0]);
      std::memcpy(v.data(), bytes.data(), v.size() * sizeof(double));
      st.input_sq_sum[stem] = std::move(v);
    } else if (ends_with(t.name, kHess, &stem)) {
      need(DType::F64, 3, "[K/16, 16, 16]");
      if (t.shape[1] != 16 || t.shape[2] != 16 || t.shape[0] == 0)
        throw Error(fmt::format("{}: tensor {} must be F64 [K/16, 16, 16]", path.string(), t.name));
      std::vector<double> v(t.shape[0] * 256);
      std::memcpy(v.data(), bytes.data(), v.size() * sizeof(double));
      for (double x : v)
        if (!std::isfinite(x))
          throw Error(fmt::format("{}: {} holds a non-finite value", path.string(), t.name));
      st.hessian_blocks[stem] = std::move(v);
    } else if (ends_with(t.name, kXtx, &stem)) {
      need(DType::F64, 2, "[K, K]");
      if (t.shape[0] != t.shape[1] || t.shape[0] == 0)
        throw Error(fmt::format("{}: tensor {} must be F64 [K, K]", path.string(), t.name));
      std::vector<double> v(t.shape[0] * t.shape[1]);
      std::memcpy(v.data(), bytes.data(), v.size() * sizeof(double));
      for (double x : v)
        if (!std::isfinite(x))
          throw Error(fmt::format("{}: {} holds a non-finite value", path.string(), t.name));
      st.xtx[stem] = std::move(v);
    } else if (ends_with(t.name, kCount, &stem)) {
      need(DType::I64, 0, "[]");
      int64_t c;
      std::memcpy(&c, bytes.data(), sizeof c);
      if (c < 0) throw Error(fmt::format("{}: {} is negative", path.string(), t.name));
      st.token_count[stem] = c;
    } else if (ends_with(t.name, kRouted, &stem)) {
      need(DType::I64, 0, "[]");
      int64_t c;
      std::memcpy(&c, bytes.data(), sizeof c);
      if (c < 0) throw Error(fmt::format("{}: {} is negative", path.string(), t.name));
      st.routed_tokens[stem] = c;
    } else {
      throw Error(fmt::format("{}: unexpected tensor {} in a stats file", path.string(), t.name));
    }
  }
  return st;
}

std::string bmm_expert_stats_name(const std::string& module, uint64_t expert) {
  const size_t dot = module.rfind('.');
  if (dot == std::string::npos) return fmt::format("{}.{}", expert, module);
  return fmt::format("{}.{}{}", module.substr(0, dot), expert, module.substr(dot));
}

}  // namespace fp4kit
