#pragma once
// A work directory that leaves nothing behind unless asked to: removed when the owner is
// destroyed without keep() (an error unwinding), and on SIGINT / SIGTERM / SIGHUP, where the
// running child (subprocess.hpp) is stopped first and the process then exits with 128 + signal.
// One ScratchDir at a time per process.
#include <filesystem>
#include <string>
#include <thread>

namespace fp4kit::cli {

class ScratchDir {
 public:
  // `requested` empty: a new directory `<temp>/<prefix>-XXXXXX`; otherwise `requested`, which
  // must be absent or empty (throws fp4kit::Error naming it). Only what the owner wrote is
  // removed: a requested directory that already existed is emptied, not deleted.
  ScratchDir(const std::string& requested, const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Keep the directory when this object is destroyed (success).
  void keep() { keep_ = true; }

 private:
  std::filesystem::path path_;
  bool created_ = false, keep_ = false;
  int pipe_[2] = {-1, -1};
  std::thread watcher_;
};

}  // namespace fp4kit::cli
