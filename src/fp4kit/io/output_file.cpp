#include "fp4kit/io/output_file.hpp"

#include <fmt/core.h>

#include "fp4kit/error.hpp"
#include "fp4kit/io/file_sync.hpp"

namespace fp4kit {

namespace fs = std::filesystem;

OutputFile::OutputFile(fs::path out, const fs::path& source, bool force) : out_(std::move(out)) {
  if (out_.empty() || !out_.has_filename())
    throw Error(fmt::format("output file '{}': not a file name", out_.string()));
  partial_ = out_;
  partial_ += ".partial";
  std::error_code ec;
  if (!source.empty()) {
    const fs::path a = fs::weakly_canonical(fs::absolute(out_));
    const fs::path b = fs::weakly_canonical(fs::absolute(source));
    if (a.parent_path() == b || a == b)
      throw Error(fmt::format("{}: refusing to write into the source directory {}", out_.string(),
                              source.string()));
  }
  if (fs::exists(fs::symlink_status(out_, ec))) {
    if (fs::is_directory(out_, ec))
      throw Error(fmt::format("{}: exists and is a directory", out_.string()));
    if (!force)
      throw Error(fmt::format("{}: exists (use --force to replace it)", out_.string()));
  }
  fs::remove(partial_, ec);  // a leftover of an interrupted earlier run
  if (ec)
    throw Error(fmt::format("{}: cannot remove leftover: {}", partial_.string(), ec.message()));
}

OutputFile::~OutputFile() {
  if (committed_) return;
  std::error_code ec;
  fs::remove(partial_, ec);  // best effort: a destructor must not throw
}

void OutputFile::commit() {
  if (committed_) throw Error(fmt::format("{}: already committed", out_.string()));
  std::error_code ec;
  fs::rename(partial_, out_, ec);
  if (ec)
    throw Error(fmt::format("{}: cannot rename {} to it: {}", out_.string(), partial_.string(),
                            ec.message()));
  committed_ = true;
  sync_directory(fs::absolute(out_).parent_path());
}

}  // namespace fp4kit
