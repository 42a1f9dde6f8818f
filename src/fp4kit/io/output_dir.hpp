#pragma once
// Atomic output directories: everything is written into OUT.partial/ and renamed to OUT only when
// complete, so an error or a kill never leaves an OUT that looks finished.
#include <filesystem>

namespace fp4kit {

class OutputDir {
 public:
  // Refuses (fp4kit::Error) an OUT inside or equal to `source` (may be empty), and a non-empty
  // existing OUT unless force. Creates a fresh OUT.partial/.
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
};

}  // namespace fp4kit
