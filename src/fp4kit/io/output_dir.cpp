#include "fp4kit/io/output_dir.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>

#include "fp4kit/error.hpp"
#include "fp4kit/io/file_sync.hpp"
#include "fp4kit/io/path_identity.hpp"

namespace fp4kit {

namespace fs = std::filesystem;

namespace {

fs::path strip_trailing_separator(fs::path p) {
  while (!p.has_filename() && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
  return p;
}

// Live OUT.partial directories of this process, for remove_unfinished_outputs().
std::mutex g_live_mutex;
std::set<fs::path>& live_partials() {
  static std::set<fs::path> s;
  return s;
}

// Opens and locks (exclusive, non-blocking) a directory; -1 with errno set when not possible.
int open_and_lock(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

}  // namespace

void check_output_dir(const fs::path& out_in, const fs::path& source, bool force) {
  const fs::path out = strip_trailing_separator(out_in);
  if (out.empty()) throw Error("output directory: empty path");
  const std::string name = out.filename().string();
  if (name == "." || name == ".." || out == out.root_path())
    throw Error(fmt::format("{}: OUT must name a new or replaceable directory, not \".\", \"..\" "
                            "or the root",
                            out_in.string()));
  std::error_code ec;
  if (!source.empty()) {
    if (is_within(out, source))
      throw Error(fmt::format("{}: refusing to write into the source directory {}", out.string(),
                              source.string()));
    // Replacing OUT (--force) must never delete the source either.
    if (is_within(source, out))
      throw Error(fmt::format("{}: refusing to write over a directory that contains the source "
                              "{}",
                              out.string(), source.string()));
  }
  // Nor the directory the command runs in (renaming it away would strand the process).
  if (is_within(fs::current_path(ec), out))
    throw Error(fmt::format("{}: refusing to replace a directory that contains the current "
                            "directory",
                            out.string()));
  if (fs::exists(fs::symlink_status(out, ec))) {
    if (!fs::is_directory(out, ec))
      throw Error(fmt::format("{}: exists and is not a directory", out.string()));
    if (!fs::is_empty(out, ec) && !force)
      throw Error(fmt::format("{}: exists and is not empty (use --force to replace it)",
                              out.string()));
  }
  const fs::path parent = fs::absolute(out, ec).parent_path();
  if (!fs::is_directory(parent, ec))
    throw Error(fmt::format("{}: parent directory {} does not exist", out.string(),
                            parent.string()));
  if (::access(parent.c_str(), W_OK) != 0)
    throw Error(fmt::format("{}: cannot create entries in {}: {}", out.string(), parent.string(),
                            std::strerror(errno)));
}

OutputDir::OutputDir(fs::path out, const fs::path& source, bool force)
    : out_(strip_trailing_separator(std::move(out))), force_(force) {
  check_output_dir(out_, source, force);
  partial_ = out_;
  partial_ += ".partial";
  std::error_code ec;
  const auto pst = fs::symlink_status(partial_, ec);
  if (fs::exists(pst)) {
    if (!fs::is_directory(pst))
      throw Error(fmt::format("{}: exists and is not a directory fp4kit made; remove it yourself "
                              "(fp4kit only deletes what it made)",
                              partial_.string()));
    const int fd = open_and_lock(partial_);
    if (fd < 0) {
      if (errno == EWOULDBLOCK)
        throw Error(fmt::format("{}: another fp4kit run is writing {} (its {} is locked); wait "
                                "for it or stop it",
                                out_.string(), out_.string(), partial_.string()));
      throw Error(fmt::format("{}: cannot open: {}", partial_.string(), std::strerror(errno)));
    }
    if (!fs::is_regular_file(fs::symlink_status(partial_ / kPartialMarker, ec))) {
      ::close(fd);
      throw Error(fmt::format("{}: exists but was not made by fp4kit (no {} marker inside); "
                              "remove it yourself if it is not needed",
                              partial_.string(), kPartialMarker));
    }
    // A leftover of an interrupted run of ours (marker, no live lock): start afresh.
    fs::remove_all(partial_, ec);
    ::close(fd);
    if (ec)
      throw Error(fmt::format("{}: cannot remove leftover: {}", partial_.string(), ec.message()));
  }
  // mkdir is atomic: of two runs starting together only one creates the directory.
  if (::mkdir(partial_.c_str(), 0777) != 0) {
    if (errno == EEXIST)
      throw Error(fmt::format("{}: another fp4kit run is writing {} (its {} just appeared)",
                              out_.string(), out_.string(), partial_.string()));
    throw Error(fmt::format("{}: cannot create: {}", partial_.string(), std::strerror(errno)));
  }
  lock_fd_ = open_and_lock(partial_);
  if (lock_fd_ < 0)
    throw Error(fmt::format("{}: another fp4kit run took the lock of the directory just "
                            "created: {}",
                            partial_.string(), std::strerror(errno)));
  {
    std::ofstream marker(partial_ / kPartialMarker);
    marker << "fp4kit output in progress; removed on completion\n";
    marker.close();
    if (!marker) {
      fs::remove_all(partial_, ec);
      throw Error(fmt::format("{}: cannot write {}", partial_.string(), kPartialMarker));
    }
  }
  std::lock_guard<std::mutex> g(g_live_mutex);
  live_partials().insert(fs::absolute(partial_, ec));
}

OutputDir::~OutputDir() {
  {
    std::lock_guard<std::mutex> g(g_live_mutex);
    std::error_code ec;
    live_partials().erase(fs::absolute(partial_, ec));
    if (!committed_) fs::remove_all(partial_, ec);  // best effort: a destructor must not throw
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void OutputDir::commit() {
  if (committed_) throw Error(fmt::format("{}: already committed", out_.string()));
  std::error_code ec;
  // The marker goes first (the lock still guards the directory): OUT never carries it.
  fs::remove(partial_ / kPartialMarker, ec);
  if (ec) throw Error(fmt::format("{}: cannot remove {}: {}", partial_.string(), kPartialMarker,
                                  ec.message()));
  // Everything under OUT.partial reaches the disk before the name OUT appears.
  for (auto it = fs::recursive_directory_iterator(partial_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    if (it->is_directory(ec)) sync_directory(it->path());
    else if (it->is_regular_file(ec)) sync_file(it->path());
  }
  if (ec) throw Error(fmt::format("{}: cannot list: {}", partial_.string(), ec.message()));
  sync_directory(partial_);

  std::lock_guard<std::mutex> g(g_live_mutex);
  if (fs::exists(fs::symlink_status(out_, ec))) {
    if (!fs::is_empty(out_, ec) && !force_)
      throw Error(fmt::format("{}: appeared and is not empty while writing", out_.string()));
    // Swap atomically so that OUT is always either the old or the new complete directory.
    if (::renameat2(AT_FDCWD, partial_.c_str(), AT_FDCWD, out_.c_str(), RENAME_EXCHANGE) != 0)
      throw Error(fmt::format("{}: cannot replace with {}: {}", out_.string(), partial_.string(),
                              std::strerror(errno)));
    committed_ = true;
    live_partials().erase(fs::absolute(partial_, ec));
    fs::remove_all(partial_, ec);  // now holds the old OUT
    if (ec)
      throw Error(fmt::format("{}: new output is in place, but removing the old one failed: {}",
                              partial_.string(), ec.message()));
  } else {
    if (::rename(partial_.c_str(), out_.c_str()) != 0)
      throw Error(fmt::format("{}: cannot rename to {}: {}", partial_.string(), out_.string(),
                              std::strerror(errno)));
    committed_ = true;
    live_partials().erase(fs::absolute(partial_, ec));
  }
  fs::path parent = fs::absolute(out_).parent_path();
  sync_directory(parent);
}

std::vector<fs::path> remove_unfinished_outputs() {
  std::lock_guard<std::mutex> g(g_live_mutex);
  std::vector<fs::path> removed;
  for (const auto& p : live_partials()) {
    std::error_code ec;
    fs::remove_all(p, ec);
    removed.push_back(p);
  }
  live_partials().clear();
  return removed;
}

}  // namespace fp4kit
