#pragma once
// Atomic output directories: everything is written into OUT.partial/ and renamed to OUT only when
// complete, so an error or a kill never leaves an OUT that looks finished.
//
// OUT.partial/ carries fp4kit's marker file (kPartialMarker) and an advisory lock (flock on the
// directory) for as long as its run lives: a second run on the same OUT is refused while the
// first holds the lock, a leftover of a killed run (marker, no lock) is removed, and an
// OUT.partial fp4kit did not make (no marker) is never deleted.
#include <filesystem>
#include <vector>

namespace fp4kit {

inline constexpr const char* kPartialMarker = ".fp4kit-partial";

class OutputDir {
 public:
  // Refuses (fp4kit::Error) an OUT inside or equal to `source` (may be empty) or containing it,
  // compared by identity (device + inode), and a non-empty existing OUT unless force. Creates a
  // fresh, locked OUT.partial/.
  OutputDir(std::filesystem::path out, const std::filesystem::path& source, bool force);
  // Removes OUT.partial/ unless commit() succeeded.
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  const std::filesystem::path& partial() const { return partial_; }
  const std::filesystem::path& final_path() const { return out_; }
  // fsyncs and renames OUT.partial -> OUT (replacing an old OUT when forced).
  void commit();

 private:
  std::filesystem::path out_;
  std::filesystem::path partial_;
  bool force_ = false;
  bool committed_ = false;
  int lock_fd_ = -1;
};

// The checks of the OutputDir constructor that need no writing (OUT's name, its relation to the
// source, a non-empty OUT without force), so a command can run them before reading anything.
void check_output_dir(const std::filesystem::path& out, const std::filesystem::path& source,
                      bool force);

// For a signal handler thread: removes the OUT.partial/ of every live OutputDir (their locks are
// held by this process). Returns the paths removed.
std::vector<std::filesystem::path> remove_unfinished_outputs();

}  // namespace fp4kit
