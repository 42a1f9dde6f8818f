#include "fp4kit/io/output_dir.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cerrno>
#include <cstring>

#include "fp4kit/error.hpp"
#include "fp4kit/io/file_sync.hpp"

namespace fp4kit {

namespace fs = std::filesystem;

namespace {

// `inner` equals `outer` or lies below it (both made absolute, symlinks resolved where they exist).
bool is_within(const fs::path& inner, const fs::path& outer) {
  const fs::path a = fs::weakly_canonical(fs::absolute(inner));
  const fs::path b = fs::weakly_canonical(fs::absolute(outer));
  auto ai = a.begin();
  for (auto bi = b.begin(); bi != b.end(); ++bi, ++ai) {
    if (bi->empty()) continue;  // trailing separator
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

fs::path strip_trailing_separator(fs::path p) {
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  return p;
}

}  // namespace

OutputDir::OutputDir(fs::path out, const fs::path& source, bool force)
    : out_(strip_trailing_separator(std::move(out))), force_(force) {
  if (out_.empty()) throw Error("output directory: empty path");
  partial_ = out_;
  partial_ += ".partial";
  std::error_code ec;
  if (!source.empty()) {
    if (is_within(out_, source))
      throw Error(fmt::format("{}: refusing to write into the source directory {}", out_.string(),
                              source.string()));
    // Replacing OUT (--force) must never delete the source either.
    if (is_within(source, out_))
      throw Error(fmt::format("{}: refusing to write over a directory that contains the source "
                              "{}",
                              out_.string(), source.string()));
  }
  if (fs::exists(fs::symlink_status(out_, ec))) {
    if (!fs::is_directory(out_, ec))
      throw Error(fmt::format("{}: exists and is not a directory", out_.string()));
    if (!fs::is_empty(out_, ec) && !force)
      throw Error(fmt::format("{}: exists and is not empty (use --force to replace it)",
                              out_.string()));
  }
  // A leftover OUT.partial is an interrupted earlier run of ours: start afresh.
  fs::remove_all(partial_, ec);
  if (ec)
    throw Error(fmt::format("{}: cannot remove leftover: {}", partial_.string(), ec.message()));
  if (!fs::create_directories(partial_, ec) || ec)
    throw Error(fmt::format("{}: cannot create: {}", partial_.string(),
                            ec ? ec.message() : "already exists"));
}

OutputDir::~OutputDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(partial_, ec);  // best effort: a destructor must not throw
}

void OutputDir::commit() {
  if (committed_) throw Error(fmt::format("{}: already committed", out_.string()));
  // Everything under OUT.partial reaches the disk before the name OUT appears.
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(partial_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    if (it->is_directory(ec)) sync_directory(it->path());
    else if (it->is_regular_file(ec)) sync_file(it->path());
  }
  if (ec) throw Error(fmt::format("{}: cannot list: {}", partial_.string(), ec.message()));
  sync_directory(partial_);

  if (fs::exists(fs::symlink_status(out_, ec))) {
    if (!fs::is_empty(out_, ec) && !force_)
      throw Error(fmt::format("{}: appeared and is not empty while writing", out_.string()));
    // Swap atomically so that OUT is always either the old or the new complete directory.
    if (::renameat2(AT_FDCWD, partial_.c_str(), AT_FDCWD, out_.c_str(), RENAME_EXCHANGE) != 0)
      throw Error(fmt::format("{}: cannot replace with {}: {}", out_.string(), partial_.string(),
                              std::strerror(errno)));
    committed_ = true;
    fs::remove_all(partial_, ec);  // now holds the old OUT
    if (ec)
      throw Error(fmt::format("{}: new output is in place, but removing the old one failed: {}",
                              partial_.string(), ec.message()));
  } else {
    if (::rename(partial_.c_str(), out_.c_str()) != 0)
      throw Error(fmt::format("{}: cannot rename to {}: {}", partial_.string(), out_.string(),
                              std::strerror(errno)));
    committed_ = true;
  }
  fs::path parent = fs::absolute(out_).parent_path();
  sync_directory(parent);
}

}  // namespace fp4kit
