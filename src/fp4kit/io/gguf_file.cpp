#include "fp4kit/io/gguf_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace {

// GGUF value types (gguf.h).
enum : uint32_t {
  kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9,
};

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out.append(b, sizeof(T));
}

void put_str(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void pwrite_all(int fd, const std::filesystem::path& path, const void* data, size_t n,
                uint64_t at) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(at));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(fmt::format("{}: write failed: {}", path.string(), std::strerror(errno)));
    }
    p += w, at += static_cast<uint64_t>(w), n -= static_cast<size_t>(w);
  }
}

}  // namespace

std::string_view ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::BF16: return "BF16";
    case GgmlType::NVFP4: return "NVFP4";
  }
  return "?";
}

uint64_t ggml_row_bytes(GgmlType t, uint64_t ne0) {
  switch (t) {
    case GgmlType::F32: return ne0 * 4;
    case GgmlType::F16:
    case GgmlType::BF16: return ne0 * 2;
    case GgmlType::NVFP4:
      if (ne0 % kGgmlNvfp4Block != 0)
        throw Error(fmt::format("NVFP4 row length {} is not a multiple of {}", ne0,
                                kGgmlNvfp4Block));
      return ne0 / kGgmlNvfp4Block * kGgmlNvfp4BlockBytes;
  }
  throw Error("unknown ggml type");
}

uint64_t GgufTensor::nbytes() const {
  uint64_t rows = 1;
  for (size_t d = 1; d < ne.size(); ++d) rows *= ne[d];
  return ne.empty() ? 0 : ggml_row_bytes(type, ne[0]) * rows;
}

void GgufMetadata::key(const std::string& k, uint32_t type) {
  for (const auto& have : keys_)
    if (have == k) throw Error(fmt::format("GGUF metadata key '{}' set twice (internal error)", k));
  keys_.push_back(k);
  ++count_;
  put_str(bytes_, k);
  put<uint32_t>(bytes_, type);
}
bool GgufMetadata::has(const std::string& k) const {
  for (const auto& have : keys_)
    if (have == k) return true;
  return false;
}
void GgufMetadata::add_u32(const std::string& k, uint32_t v) { key(k, kU32), put(bytes_, v); }
void GgufMetadata::add_i32(const std::string& k, int32_t v) { key(k, kI32), put(bytes_, v); }
void GgufMetadata::add_f32(const std::string& k, float v) { key(k, kF32), put(bytes_, v); }
void GgufMetadata::add_bool(const std::string& k, bool v) {
  key(k, kBool), put<uint8_t>(bytes_, v ? 1 : 0);
}
void GgufMetadata::add_string(const std::string& k, const std::string& v) {
  key(k, kString), put_str(bytes_, v);
}
void GgufMetadata::add_strings(const std::string& k, const std::vector<std::string>& v) {
  key(k, kArray), put<uint32_t>(bytes_, kString), put<uint64_t>(bytes_, v.size());
  for (const auto& s : v) put_str(bytes_, s);
}
void GgufMetadata::add_i32s(const std::string& k, const std::vector<int32_t>& v) {
  key(k, kArray), put<uint32_t>(bytes_, kI32), put<uint64_t>(bytes_, v.size());
  for (int32_t x : v) put(bytes_, x);
}
void GgufMetadata::add_f32s(const std::string& k, const std::vector<float>& v) {
  key(k, kArray), put<uint32_t>(bytes_, kF32), put<uint64_t>(bytes_, v.size());
  for (float x : v) put(bytes_, x);
}
void GgufMetadata::add_bools(const std::string& k, const std::vector<bool>& v) {
  key(k, kArray), put<uint32_t>(bytes_, kBool), put<uint64_t>(bytes_, v.size());
  for (bool x : v) put<uint8_t>(bytes_, x ? 1 : 0);
}

GgufFileWriter::GgufFileWriter(const std::filesystem::path& path, const GgufMetadata& meta,
                               std::vector<GgufTensor> tensors, uint64_t alignment)
    : path_(path), tensors_(std::move(tensors)) {
  std::string header;
  put<uint32_t>(header, 0x46554747u);  // "GGUF"
  put<uint32_t>(header, 3);
  put<uint64_t>(header, tensors_.size());
  put<uint64_t>(header, meta.count());
  header += meta.bytes();
  std::set<std::string> names;
  uint64_t at = 0;
  for (const auto& t : tensors_) {
    if (!names.insert(t.name).second)
      throw Error(fmt::format("{}: tensor '{}' twice (internal error)", path.string(), t.name));
    if (t.ne.empty() || t.ne.size() > 4)
      throw Error(fmt::format("{}: tensor '{}' has {} dims (GGUF takes 1 to 4)", path.string(),
                              t.name, t.ne.size()));
    uint64_t bytes = 0;
    try {
      bytes = t.nbytes();
    } catch (const Error& e) {
      throw Error(fmt::format("{}: tensor '{}': {}", path.string(), t.name, e.what()));
    }
    put_str(header, t.name);
    put<uint32_t>(header, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) put<uint64_t>(header, d);
    put<uint32_t>(header, static_cast<uint32_t>(t.type));
    put<uint64_t>(header, at);
    offsets_.push_back(at);
    at = align_up(at + bytes, alignment);
  }
  data_bytes_ = at;
  data_start_ = align_up(header.size(), alignment);
  header.resize(data_start_, '\0');
  written_.assign(tensors_.size(), 0);
  ranges_.resize(tensors_.size());

  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw Error(fmt::format("{}: create failed: {}", path.string(), std::strerror(errno)));
  pwrite_all(fd_, path_, header.data(), header.size(), 0);
  // The file's final size now, so the padding between tensors reads as zeros.
  if (::ftruncate(fd_, static_cast<off_t>(data_start_ + data_bytes_)) != 0)
    throw Error(fmt::format("{}: resize failed: {}", path.string(), std::strerror(errno)));
}

GgufFileWriter::~GgufFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

size_t GgufFileWriter::index_of(const std::string& name) const {
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (tensors_[i].name == name) return i;
  throw Error(fmt::format("{}: no tensor '{}' in the GGUF layout (internal error)",
                          path_.string(), name));
}

void GgufFileWriter::write(size_t i, uint64_t offset, std::span<const uint8_t> bytes) {
  const GgufTensor& t = tensors_.at(i);
  const uint64_t size = t.nbytes();
  if (offset + bytes.size() > size)
    throw Error(fmt::format("{}: tensor '{}': bytes [{}, {}) outside its {} bytes (internal "
                            "error)",
                            path_.string(), t.name, offset, offset + bytes.size(), size));
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [b, e] : ranges_[i])
      if (offset < e && b < offset + bytes.size())
        throw Error(fmt::format("{}: tensor '{}': bytes [{}, {}) written twice (internal error)",
                                path_.string(), t.name, offset, offset + bytes.size()));
    ranges_[i].emplace_back(offset, offset + bytes.size());
    written_[i] += bytes.size();
  }
  const uint64_t at = data_start_ + offsets_[i] + offset;
  pwrite_all(fd_, path_, bytes.data(), bytes.size(), at);
  // Every 32 MiB, start writeback of everything dirty (asynchronous), so that dirty pages do not
  // pile up for the final fsync, in few large requests; where unsupported, the fsync alone makes
  // the file durable.
  if (unkicked_.fetch_add(bytes.size()) + bytes.size() >= (32ull << 20)) {
    unkicked_ = 0;
    ::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
  }
}

void GgufFileWriter::finish() {
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (written_[i] != tensors_[i].nbytes())
      throw Error(fmt::format("{}: tensor '{}' incomplete: {} of {} bytes written (internal "
                              "error)",
                              path_.string(), tensors_[i].name, written_[i],
                              tensors_[i].nbytes()));
  if (::fsync(fd_) != 0)
    throw Error(fmt::format("{}: fsync failed: {}", path_.string(), std::strerror(errno)));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0)
    throw Error(fmt::format("{}: close failed: {}", path_.string(), std::strerror(errno)));
}

const GgufValue* GgufHeader::find(const std::string& key) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return &v;
  return nullptr;
}

namespace {

class HeaderReader {
 public:
  explicit HeaderReader(const std::filesystem::path& path) : path_(path), f_(path, std::ios::binary) {
    if (!f_) throw Error(fmt::format("{}: cannot open", path.string()));
  }
  template <typename T>
  T get() {
    T v;
    if (!f_.read(reinterpret_cast<char*>(&v), sizeof(T)))
      throw Error(fmt::format("{}: truncated GGUF header at byte {}", path_.string(), pos_));
    pos_ += sizeof(T);
    return v;
  }
  std::string str() {
    const uint64_t n = get<uint64_t>();
    if (n > (1ull << 30))
      throw Error(fmt::format("{}: string of {} bytes at byte {}", path_.string(), n, pos_));
    std::string s(n, '\0');
    if (n && !f_.read(s.data(), static_cast<std::streamsize>(n)))
      throw Error(fmt::format("{}: truncated GGUF header at byte {}", path_.string(), pos_));
    pos_ += n;
    return s;
  }
  // A value of `type`: numbers and strings are returned, arrays skipped after their header.
  GgufValue value(uint32_t type, bool in_array = false) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case 0: v.number = get<uint8_t>(); break;
      case 1: v.number = get<int8_t>(); break;
      case 2: v.number = get<uint16_t>(); break;
      case 3: v.number = get<int16_t>(); break;
      case 4: v.number = get<uint32_t>(); break;
      case 5: v.number = get<int32_t>(); break;
      case 6: v.number = get<float>(); break;
      case 7: v.number = get<uint8_t>(); break;
      case 8: v.text = str(); break;
      case 10: v.number = static_cast<double>(get<uint64_t>()); break;
      case 11: v.number = static_cast<double>(get<int64_t>()); break;
      case 12: v.number = get<double>(); break;
      case 9: {
        if (in_array) throw Error(fmt::format("{}: nested GGUF array", path_.string()));
        v.elem_type = get<uint32_t>();
        v.count = get<uint64_t>();
        for (uint64_t i = 0; i < v.count; ++i) value(v.elem_type, true);
        break;
      }
      default:
        throw Error(fmt::format("{}: unknown GGUF value type {} at byte {}", path_.string(), type,
                                pos_));
    }
    return v;
  }
  uint64_t pos() const { return pos_; }

 private:
  std::filesystem::path path_;
  std::ifstream f_;
  uint64_t pos_ = 0;
};

}  // namespace

GgufHeader read_gguf_header(const std::filesystem::path& path) {
  HeaderReader r(path);
  GgufHeader h;
  if (r.get<uint32_t>() != 0x46554747u)
    throw Error(fmt::format("{}: not a GGUF file (magic)", path.string()));
  h.version = r.get<uint32_t>();
  if (h.version != 3)
    throw Error(fmt::format("{}: GGUF version {}, expected 3", path.string(), h.version));
  const uint64_t n_tensors = r.get<uint64_t>(), n_kv = r.get<uint64_t>();
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.str();
    const uint32_t type = r.get<uint32_t>();
    h.metadata.emplace_back(std::move(key), r.value(type));
  }
  if (const GgufValue* a = h.find("general.alignment")) {
    h.alignment = static_cast<uint64_t>(a->number);
    if (h.alignment == 0 || (h.alignment & (h.alignment - 1)))
      throw Error(fmt::format("{}: general.alignment {} is not a power of two", path.string(),
                              h.alignment));
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.str();
    const uint32_t dims = r.get<uint32_t>();
    if (dims == 0 || dims > 4)
      throw Error(fmt::format("{}: tensor '{}' has {} dims", path.string(), t.name, dims));
    for (uint32_t d = 0; d < dims; ++d) t.ne.push_back(r.get<uint64_t>());
    t.type = r.get<uint32_t>();
    t.offset = r.get<uint64_t>();
    h.tensors.push_back(std::move(t));
  }
  h.data_start = align_up(r.pos(), h.alignment);
  h.file_size = std::filesystem::file_size(path);
  return h;
}

}  // namespace fp4kit
