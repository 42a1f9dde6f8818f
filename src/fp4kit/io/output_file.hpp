#pragma once
// Atomic single-file outputs (a GGUF): written as OUT.partial, renamed to OUT only when complete,
// so an error or a kill never leaves an OUT that looks finished.
#include <filesystem>

namespace fp4kit {

class OutputFile {
 public:
  // Refuses (fp4kit::Error) an OUT inside `source` (may be empty), an OUT that is a directory,
  // and an existing OUT unless force. Removes a leftover OUT.partial.
  OutputFile(std::filesystem::path out, const std::filesystem::path& source, bool force);
  // Removes OUT.partial unless commit() succeeded.
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  const std::filesystem::path& partial() const { return partial_; }
  // OUT.partial (already fsynced by its writer) -> OUT, then fsyncs the directory.
  void commit();

 private:
  std::filesystem::path out_, partial_;
  bool committed_ = false;
};

}  // namespace fp4kit
