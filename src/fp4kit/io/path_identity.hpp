#pragma once
// Files compared by identity (device + inode), not by name: a bind mount, a symlinked directory,
// `a/../a` or a hard link name the same file through different paths. Every output option checks
// its path here, before the first input byte is read, so that no output can replace an input.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace fp4kit {

struct FileId {
  unsigned long long dev = 0, ino = 0;
  bool operator==(const FileId&) const = default;
};

// stat() (symlinks followed); nullopt when the path does not exist.
std::optional<FileId> file_id(const std::filesystem::path& p);
// Both exist and are the same file or directory.
bool same_file(const std::filesystem::path& a, const std::filesystem::path& b);
// Two paths that may not exist yet name the same file: same_file, or the same file name in the
// same (existing) directory.
bool same_path(const std::filesystem::path& a, const std::filesystem::path& b);
// `inner` is `outer` or lies below it: some existing directory on inner's absolute path
// (walking up from inner) is the same directory as outer. inner need not exist.
bool is_within(const std::filesystem::path& inner, const std::filesystem::path& outer);

// An input the outputs must not touch: a checkpoint directory (nothing may be written inside
// it) or a single file (data, stats, base log-probs).
struct InputPath {
  std::filesystem::path path;
  std::string label;  // e.g. "source checkpoint", "--data"
};

// Checks an output FILE before any work: not a directory, not an input file or inside an input
// directory (by identity), its parent an existing writable directory. Throws fp4kit::Error
// naming `option` and the rule.
void check_output_file(const std::filesystem::path& out, const std::string& option,
                       const std::vector<InputPath>& inputs);

}  // namespace fp4kit
