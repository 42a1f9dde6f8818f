#include "fp4kit/io/path_identity.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cerrno>
#include <cstring>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace fs = std::filesystem;

std::optional<FileId> file_id(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return std::nullopt;
  return FileId{static_cast<unsigned long long>(st.st_dev),
                static_cast<unsigned long long>(st.st_ino)};
}

bool same_file(const fs::path& a, const fs::path& b) {
  const auto ia = file_id(a), ib = file_id(b);
  return ia && ib && *ia == *ib;
}

bool same_path(const fs::path& a, const fs::path& b) {
  if (same_file(a, b)) return true;
  std::error_code ec;
  const fs::path aa = fs::absolute(a, ec).lexically_normal(), ab = fs::absolute(b, ec).lexically_normal();
  if (aa == ab) return true;
  return aa.filename() == ab.filename() && same_file(aa.parent_path(), ab.parent_path());
}

bool is_within(const fs::path& inner, const fs::path& outer) {
  const auto target = file_id(outer);
  if (!target) return false;
  std::error_code ec;
  fs::path p = fs::absolute(inner, ec);
  if (ec) return false;
  p = p.lexically_normal();
  // Walk up the path as written (each existing prefix is a real directory, whatever mount or
  // link it came through) and, for symlinked components, up the resolved path too.
  for (int pass = 0; pass < 2; ++pass) {
    fs::path q = pass == 0 ? p : fs::weakly_canonical(p, ec);
    if (ec) break;
    while (true) {
      if (const auto id = file_id(q); id && *id == *target) return true;
      if (q == q.parent_path() || q.empty()) break;
      q = q.parent_path();
    }
  }
  return false;
}

void check_output_file(const fs::path& out, const std::string& option,
                       const std::vector<InputPath>& inputs) {
  if (out.empty()) throw Error(fmt::format("{}: empty path", option));
  std::error_code ec;
  const auto st = fs::status(out, ec);
  if (fs::is_directory(st))
    throw Error(fmt::format("{} {}: is a directory (a file path is needed)", option, out.string()));
  for (const auto& in : inputs) {
    if (in.path.empty()) continue;
    if (same_file(out, in.path))
      throw Error(fmt::format("{} {}: is the {} {} itself (same file); refusing to overwrite an "
                              "input",
                              option, out.string(), in.label, in.path.string()));
    if (fs::is_directory(in.path, ec) && is_within(out, in.path))
      throw Error(fmt::format("{} {}: lies inside the {} {}; refusing to write into an input "
                              "directory",
                              option, out.string(), in.label, in.path.string()));
    // A hard link elsewhere to one of the directory's files is that file too.
    if (fs::is_directory(in.path, ec) && fs::exists(out, ec))
      for (const auto& e : fs::directory_iterator(in.path, ec))
        if (same_file(out, e.path()))
          throw Error(fmt::format("{} {}: is the same file as {} of the {}; refusing to "
                                  "overwrite an input",
                                  option, out.string(), e.path().string(), in.label));
  }
  fs::path parent = fs::absolute(out, ec).parent_path();
  if (!fs::is_directory(parent, ec))
    throw Error(fmt::format("{} {}: directory {} does not exist", option, out.string(),
                            parent.string()));
  if (::access(parent.c_str(), W_OK) != 0)
    throw Error(fmt::format("{} {}: cannot write in {}: {}", option, out.string(), parent.string(),
                            std::strerror(errno)));
  if (fs::exists(fs::symlink_status(out, ec)) && !fs::is_regular_file(st))
    throw Error(fmt::format("{} {}: exists and is not a regular file", option, out.string()));
}

}  // namespace fp4kit
