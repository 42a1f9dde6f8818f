#include "fp4kit/verify/gguf_checks.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>

#include "fp4kit/error.hpp"
#include "fp4kit/io/gguf_file.hpp"

namespace fp4kit::verify {

namespace {

// Bytes of the ggml types fp4kit knows; nullopt for others (not checked).
std::optional<uint64_t> tensor_bytes(const GgufTensorInfo& t) {
  GgmlType type;
  switch (t.type) {
    case 0: type = GgmlType::F32; break;
    case 1: type = GgmlType::F16; break;
    case 30: type = GgmlType::BF16; break;
    case 40: type = GgmlType::NVFP4; break;
    default: return std::nullopt;
  }
  return GgufTensor{t.name, t.ne, type}.nbytes();
}

std::vector<uint8_t> read_at(std::ifstream& f, uint64_t at, uint64_t n) {
  std::vector<uint8_t> b(n);
  f.seekg(static_cast<std::streamoff>(at));
  if (!f.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(n)))
    throw Error("read failed");
  return b;
}

}  // namespace

bool GgufCheckResult::ok() const {
  return std::none_of(findings.begin(), findings.end(), [](const auto& f) { return f.error; });
}

std::string GgufCheckResult::format() const {
  std::string out;
  size_t errors = 0;
  for (const auto& f : findings) {
    errors += f.error;
    out += fmt::format("  {} {}: {}\n", f.error ? "ERROR  " : "warning", f.tensor, f.message);
  }
  out += fmt::format("  {} tensors, {} NVFP4 ({} block-scale bytes checked): {}\n", tensors, nvfp4,
                     scale_bytes,
                     errors ? fmt::format("{} error(s)", errors) : std::string("passed"));
  return out;
}

GgufCheckResult check_gguf(const std::filesystem::path& path) {
  const GgufHeader h = read_gguf_header(path);
  GgufCheckResult r;
  r.tensors = h.tensors.size();
  auto error = [&](const std::string& t, std::string m) { r.findings.push_back({true, t, m}); };
  auto warn = [&](const std::string& t, std::string m) { r.findings.push_back({false, t, m}); };

  const GgufValue* arch = h.find("general.architecture");
  if (!arch || arch->type != 8) error("general.architecture", "missing (llama.cpp cannot load)");
  else if (!h.find(arch->text + ".block_count"))
    error(arch->text + ".block_count", "missing (llama.cpp cannot load)");
  const GgufValue* tokens = h.find("tokenizer.ggml.tokens");
  if (!h.find("tokenizer.ggml.model") || !tokens)
    error("tokenizer.ggml.*", "no tokenizer: llama.cpp cannot run the file by itself");

  std::map<std::string, const GgufTensorInfo*> by_name;
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [begin, end) in the data section
  for (const auto& t : h.tensors) {
    if (!by_name.emplace(t.name, &t).second) error(t.name, "tensor name twice");
    const auto bytes = tensor_bytes(t);
    if (!bytes) {
      warn(t.name, fmt::format("ggml type {} not checked by fp4kit", t.type));
      continue;
    }
    if (t.offset % h.alignment)
      error(t.name, fmt::format("offset {} not a multiple of the alignment {}", t.offset,
                                h.alignment));
    if (h.data_start + t.offset + *bytes > h.file_size)
      error(t.name, fmt::format("data [{}, {}) runs past the end of the file ({} bytes)",
                                h.data_start + t.offset, h.data_start + t.offset + *bytes,
                                h.file_size));
    spans.emplace_back(t.offset, t.offset + *bytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second)
      error("(data)", fmt::format("tensors overlap at data offset {}", spans[i].first));
  if (tokens && by_name.count("token_embd.weight")) {
    const auto& e = *by_name["token_embd.weight"];
    if (e.ne.size() == 2 && e.ne[1] != tokens->count)
      error("token_embd.weight", fmt::format("{} rows, but the vocabulary has {} tokens",
                                             e.ne[1], tokens->count));
  }
  if (!r.ok()) return r;  // the data cannot be trusted to read

  std::ifstream f(path, std::ios::binary);
  auto scalars = [&](const GgufTensorInfo& t) {
    const uint64_t n = t.ne[0] * (t.ne.size() > 1 ? t.ne[1] : 1);
    const auto raw = read_at(f, h.data_start + t.offset, n * 4);
    std::vector<float> v(n);
    std::memcpy(v.data(), raw.data(), n * 4);
    return v;
  };
  for (const auto& t : h.tensors) {
    const bool is_scale = t.name.ends_with(".scale"), is_input = t.name.ends_with(".input_scale");
    if (is_scale || is_input) {
      const std::string w =
          t.name.substr(0, t.name.size() - (is_scale ? 6 : 12)) + ".weight";
      auto it = by_name.find(w);
      if (it == by_name.end() || it->second->type != 40)
        warn(t.name, fmt::format("no NVFP4 {} beside it", w));
      continue;
    }
    if (t.type != 40) continue;
    ++r.nvfp4;
    const std::string stem = t.name.ends_with(".weight")
                                 ? t.name.substr(0, t.name.size() - 7) : t.name;
    const uint64_t experts = t.ne.size() == 3 ? t.ne[2] : 1;
    for (const char* kind : {".scale", ".input_scale"}) {
      auto it = by_name.find(stem + kind);
      if (it == by_name.end()) {
        if (std::string(kind) == ".scale")
          error(t.name, "NVFP4 weight without its F32 .scale tensor: llama.cpp runs it unscaled "
                        "(the block scales alone are relative to the global scale)");
        continue;
      }
      const GgufTensorInfo& s = *it->second;
      if (s.type != 0 || s.ne.size() != 1 || s.ne[0] != experts) {
        error(s.name, fmt::format("must be F32 [{}] for {} (one value per expert)", experts,
                                  t.name));
        continue;
      }
      const auto v = scalars(s);
      for (size_t i = 0; i < v.size(); ++i)
        if (!(v[i] > 0) || !std::isfinite(v[i])) {
          error(s.name, fmt::format("value [{}] = {} is not positive and finite", i, v[i]));
          break;
        }
    }
    // Block-scale bytes: the first 4 of every 36-byte block.
    const uint64_t total = *tensor_bytes(t), chunk = 36ull << 16;
    uint64_t negative = 0, first = 0;
    for (uint64_t at = 0; at < total; at += chunk) {
      const auto b = read_at(f, h.data_start + t.offset + at, std::min(chunk, total - at));
      for (uint64_t k = 0; k < b.size(); k += 36)
        for (int j = 0; j < 4; ++j)
          if (b[k + j] & 0x80) {
            if (!negative++) first = (at + k) / 36;
          }
      r.scale_bytes += b.size() / 36 * 4;
    }
    if (negative)
      error(t.name, fmt::format("{} block-scale bytes have bit 7 set (first in block {}): "
                                "llama.cpp's CPU decoder ignores it, its CUDA decoder reads a "
                                "negative scale",
                                negative, first));
  }
  return r;
}

}  // namespace fp4kit::verify
