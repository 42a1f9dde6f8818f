#include "fp4kit/io/safetensors_reader.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fp4kit/error.hpp"
#include "fp4kit/io/json_strict.hpp"

namespace fp4kit {

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // validated against overflow when the header was parsed
  return n;
}

namespace {

using nlohmann::json;

std::string shape_text(const std::vector<uint64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

// A non-negative integer that fits uint64 (nlohmann stores larger literals as double and
// negative ones as signed: both are rejected).
bool as_u64(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  *out = v.get<uint64_t>();
  return true;
}

TensorInfo parse_tensor_entry(const std::string& name, const json& entry, uint64_t data_size,
                              std::string_view label) {
  auto fail = [&](const std::string& rule) {
    return Error(fmt::format("{}: tensor \"{}\": {}", label, name, rule));
  };
  if (!entry.is_object()) throw fail("header entry is not an object");
  TensorInfo t;
  t.name = name;

  auto dt = entry.find("dtype");
  if (dt == entry.end() || !dt->is_string()) throw fail("missing or non-string \"dtype\"");
  const auto& dtype_str = dt->get_ref<const std::string&>();
  auto parsed = parse_dtype(dtype_str);
  if (!parsed) throw fail(fmt::format("unknown dtype \"{}\"", dtype_str));
  t.dtype = *parsed;

  auto sh = entry.find("shape");
  if (sh == entry.end() || !sh->is_array()) throw fail("missing or non-array \"shape\"");
  for (const auto& d : *sh) {
    uint64_t v;
    if (!as_u64(d, &v)) throw fail(fmt::format("shape entry {} is not a non-negative integer",
                                               d.dump()));
    t.shape.push_back(v);
  }

  auto off = entry.find("data_offsets");
  if (off == entry.end() || !off->is_array() || off->size() != 2 ||
      !as_u64((*off)[0], &t.begin) || !as_u64((*off)[1], &t.end))
    throw fail("\"data_offsets\" must be two non-negative integers [begin, end]");
  if (t.begin > t.end)
    throw fail(fmt::format("data_offsets begin {} > end {}", t.begin, t.end));
  if (t.end > data_size)
    throw fail(fmt::format("data_offsets [{}, {}] outside the data area of {} bytes", t.begin,
                           t.end, data_size));

  // bytes = product(shape) x dtype size, with every multiplication checked: a crafted shape
  // must not wrap around to a small number that happens to match the offsets.
  uint64_t bytes = dtype_size(t.dtype);
  for (uint64_t d : t.shape)
    if (__builtin_mul_overflow(bytes, d, &bytes))
      throw fail(fmt::format("shape {} x {} bytes overflows 64 bits", shape_text(t.shape),
                             dtype_size(t.dtype)));
  if (bytes != t.end - t.begin)
    throw fail(fmt::format("shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}",
                           shape_text(t.shape), dtype_name(t.dtype), bytes, t.begin, t.end,
                           t.end - t.begin));
  return t;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::string_view text, uint64_t data_size,
                                           std::string_view label) {
  // The format requires the header to start with '{' (padding is trailing spaces only).
  if (text.empty() || text.front() != '{')
    throw Error(fmt::format("{}: header does not start with '{{' (not a safetensors file?)",
                            label));
  const json doc = parse_json_strict(text, fmt::format("{}: header", label));
  if (!doc.is_object()) throw Error(fmt::format("{}: header is not a JSON object", label));

  SafetensorsHeader h;
  for (const auto& [name, value] : doc.items()) {
    if (name == "__metadata__") {
      if (!value.is_object())
        throw Error(fmt::format("{}: __metadata__ is not an object", label));
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          throw Error(fmt::format("{}: __metadata__ value of \"{}\" is not a string", label, k));
        h.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_tensor_entry(name, value, data_size, label));
  }

  // The tensors must tile the data area exactly: sorted by offset, each begins where the
  // previous one ended (zero-size tensors included), and the last ends at the end of the file.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t covered = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : h.tensors) {
    if (t.begin < covered)
      throw Error(fmt::format("{}: tensor \"{}\" [{}, {}] overlaps tensor \"{}\" [{}, {}]", label,
                              t.name, t.begin, t.end, prev->name, prev->begin, prev->end));
    if (t.begin > covered)
      throw Error(fmt::format("{}: gap of {} unused bytes [{}, {}) before tensor \"{}\"", label,
                              t.begin - covered, covered, t.begin, t.name));
    covered = t.end;
    prev = &t;
  }
  if (covered != data_size)
    throw Error(fmt::format("{}: data area has {} bytes but the tensors cover only {} "
                            "(trailing unused bytes{})",
                            label, data_size, covered,
                            prev ? fmt::format(" after tensor \"{}\"", prev->name) : ""));
  return h;
}

SafetensorsHeader parse_safetensors_image(std::span<const uint8_t> image, std::string_view label,
                                          uint64_t* data_offset) {
  if (image.empty()) throw Error(fmt::format("{}: file is empty", label));
  if (image.size() < 8)
    throw Error(fmt::format("{}: file is truncated: {} bytes, too short for the 8-byte header "
                            "length",
                            label, image.size()));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | image[i];  // little-endian u64
  if (n > kMaxSafetensorsHeaderBytes)
    throw Error(fmt::format("{}: header length {} exceeds the 100 MB limit", label, n));
  if (n > image.size() - 8)
    throw Error(fmt::format("{}: header length {} runs past the end of the file ({} bytes): "
                            "truncated or not a safetensors file",
                            label, n, image.size()));
  *data_offset = 8 + n;
  std::string_view text(reinterpret_cast<const char*>(image.data()) + 8, n);
  return parse_safetensors_header(text, image.size() - 8 - n, label);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string label = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", label, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", label));
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_size_ = static_cast<size_t>(st.st_size);
  if (f->map_size_ > 0) {
    void* m = ::mmap(nullptr, f->map_size_, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error(fmt::format("{}: mmap failed: {}", label, std::strerror(err)));
    }
    f->map_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);  // the mapping stays valid
  f->header_ = parse_safetensors_image(std::span<const uint8_t>(f->map_, f->map_size_), label,
                                       &f->data_offset_);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i)
    f->by_name_.emplace(f->header_.tensors[i].name, i);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& t) const {
  return {map_ + data_offset_ + t.begin, static_cast<size_t>(t.nbytes())};
}

namespace {
// The page-aligned span of a tensor's bytes. Rounding outwards may include a neighbour's first
// or last page; that is harmless for a read-only file mapping (the page is read again on use).
std::pair<uintptr_t, size_t> page_span(const uint8_t* p, size_t n) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t lo = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  return {lo, hi - lo};
}
}  // namespace

void SafetensorsFile::release(const TensorInfo& t) const {
  if (t.nbytes() == 0 || !map_) return;
  auto [lo, len] = page_span(map_ + data_offset_ + t.begin, t.nbytes());
  ::madvise(reinterpret_cast<void*>(lo), len, MADV_DONTNEED);  // advice: failure is harmless
}

void SafetensorsFile::prefetch(const TensorInfo& t) const {
  if (t.nbytes() == 0 || !map_) return;
  auto [lo, len] = page_span(map_ + data_offset_ + t.begin, t.nbytes());
  ::madvise(reinterpret_cast<void*>(lo), len, MADV_WILLNEED);
}

}  // namespace fp4kit
