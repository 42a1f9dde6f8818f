#pragma once
// Runs a shell command for CLI tests: exit code and combined stdout+stderr.
#include <array>
#include <cstdio>
#include <filesystem>
#include <string>
#include <sys/wait.h>

namespace fp4kit::testing {

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline std::string fp4kit_binary() { return FP4KIT_BINARY; }

// The command line `fp4kit quantize SRC OUT EXTRA`.
inline std::string quantize_command(const std::filesystem::path& src, const std::filesystem::path& out,
                                    const std::string& extra = "") {
  return fp4kit_binary() + " quantize " + quote(src.string()) + " " + quote(out.string()) + " " + extra;
}

}  // namespace fp4kit::testing
