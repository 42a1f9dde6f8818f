#include "fp4kit/io/file_sync.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cerrno>
#include <cstring>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace {
[[noreturn]] void fail(const std::filesystem::path& p, const char* what, int err) {
  throw Error(fmt::format("{}: {} failed: {}", p.string(), what, std::strerror(err)));
}
void sync_fd_path(const std::filesystem::path& p, int flags) {
  int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0) fail(p, "open", errno);
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    fail(p, "fsync", err);
  }
  ::close(fd);
}
}  // namespace

void write_file_synced(const std::filesystem::path& path, std::string_view content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "create", errno);
  const char* p = content.data();
  size_t n = content.size();
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail(path, "write", err);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, "fsync", err);
  }
  if (::close(fd) != 0) fail(path, "close", errno);
}

void sync_directory(const std::filesystem::path& dir) { sync_fd_path(dir, O_RDONLY | O_DIRECTORY); }

void sync_file(const std::filesystem::path& path) { sync_fd_path(path, O_RDONLY); }

}  // namespace fp4kit

namespace fp4kit {

void write_file_atomic(const std::filesystem::path& path, std::string_view content) {
  std::filesystem::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  try {
    write_file_synced(tmp, content);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    fail(path, "rename into place", err);
  }
}

}  // namespace fp4kit
