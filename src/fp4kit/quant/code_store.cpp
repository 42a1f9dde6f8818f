#include "fp4kit/quant/code_store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace {

// An unnamed file in `dir`: O_TMPFILE where the file system has it, else a name removed at once.
int unnamed_file(const std::filesystem::path& dir) {
  const std::string d = dir.empty() ? "." : dir.string();
#ifdef O_TMPFILE
  const int fd = ::open(d.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
#endif
  std::string tmpl = d + "/.fp4kit-codes-XXXXXX";
  const int f = ::mkstemp(tmpl.data());
  if (f < 0)
    throw Error(fmt::format("{}: cannot create a scratch file for the quantized codes: {}", d,
                            std::strerror(errno)));
  ::unlink(tmpl.c_str());
  return f;
}

}  // namespace

CodeStore::CodeStore(const std::filesystem::path& dir) : dir_(dir), fd_(unnamed_file(dir)) {}

CodeStore::~CodeStore() {
  if (fd_ >= 0) ::close(fd_);
}

void CodeStore::put(const std::string& module, float s2, const std::vector<uint8_t>& packed,
                    const std::vector<uint8_t>& scales, const ScaleOutcome& outcome) {
  if (items_.count(module))
    throw Error(fmt::format("quantized codes of '{}' stored twice (internal error)", module));
  Item it{end_, packed.size(), scales.size(), s2, outcome};
  for (const std::vector<uint8_t>* b : {&packed, &scales}) {
    size_t done = 0;
    while (done < b->size()) {
      const ssize_t n = ::pwrite(fd_, b->data() + done, b->size() - done,
                                 static_cast<off_t>(end_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw Error(fmt::format("{}: cannot write the scratch file of quantized codes: {}",
                                dir_.string(), n < 0 ? std::strerror(errno) : "no space"));
      done += static_cast<size_t>(n);
    }
    end_ += b->size();
  }
  items_.emplace(module, std::move(it));
}

bool CodeStore::get(const std::string& module, float s2, size_t packed_bytes, size_t scale_bytes,
                    uint8_t* packed, uint8_t* scales, ScaleOutcome& outcome) const {
  const auto f = items_.find(module);
  if (f == items_.end()) return false;
  const Item& it = f->second;
  if (it.packed != packed_bytes || it.scales != scale_bytes || it.s2 != s2)
    throw Error(fmt::format("quantized codes of '{}': stored for {} + {} bytes with s2 {}, asked "
                            "for {} + {} with s2 {} (internal error)",
                            module, it.packed, it.scales, it.s2, packed_bytes, scale_bytes, s2));
  uint64_t at = it.offset;
  for (auto [dst, size] : {std::pair{packed, it.packed}, std::pair{scales, it.scales}}) {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pread(fd_, dst + done, size - done, static_cast<off_t>(at + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw Error(fmt::format("{}: cannot read back the scratch file of quantized codes: {}",
                                dir_.string(), n < 0 ? std::strerror(errno) : "short file"));
      done += static_cast<size_t>(n);
    }
    at += size;
  }
  outcome = it.outcome;
  return true;
}

}  // namespace fp4kit
