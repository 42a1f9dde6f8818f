#pragma once
// Runs a program (no shell: arguments are passed as they are) in a given directory, with its
// stdout and stderr captured together. The child starts with the default signal dispositions and
// an empty signal mask whatever the parent blocks, so Ctrl-C stops it; kill_running_child() lets
// a signal watcher stop it too.
#include <filesystem>
#include <string>
#include <vector>

namespace fp4kit::cli {

struct ChildResult {
  int exit_code = -1;  // 128 + signal number when the child was killed by a signal
  std::string output;  // stdout and stderr, interleaved as written
};

// Throws fp4kit::Error when the program cannot be started.
ChildResult run_child(const std::string& program, const std::vector<std::string>& args,
                      const std::filesystem::path& cwd);

// Sends SIGTERM to the child run_child is waiting for, if any (async-signal-safe).
void kill_running_child();

// This executable (/proc/self/exe).
std::string self_executable();

}  // namespace fp4kit::cli
