// fp4kit command-line entry point: one file per subcommand, each registering itself here.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <exception>
#include <thread>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/output_dir.hpp"

namespace {

// Ctrl-C, SIGTERM, SIGHUP: the handler (any thread may receive the signal; OpenBLAS starts its
// threads before main) only writes the signal number to a pipe; one thread reads it, removes the
// unfinished OUT.partial/ of this run, says so, and exits 128+signal.
int g_signal_pipe[2] = {-1, -1};

void on_termination_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe[1], &b, 1);
}

void handle_termination_signals() {
  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) return;
  std::thread([] {
    unsigned char b = 0;
    while (::read(g_signal_pipe[0], &b, 1) != 1) {
      if (errno != EINTR) return;
    }
    const int sig = b;
    const auto removed = fp4kit::remove_unfinished_outputs();
    fmt::print(stderr, "\nfp4kit: interrupted by {}", strsignal(sig));
    if (removed.empty()) fmt::print(stderr, "; no unfinished output to remove\n");
    for (const auto& p : removed) fmt::print(stderr, "; removed the unfinished {}\n", p.string());
    std::fflush(stderr);
    _exit(128 + sig);
  }).detach();
  struct sigaction sa {};
  sa.sa_handler = on_termination_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  // OpenBLAS fell back to its generic kernels on a CPU it did not recognise (cpu/ops.hpp): run
  // again with OPENBLAS_CORETYPE naming the CPU's kernels (read by OpenBLAS only when it loads).
  // The device line of calibrate / eval names the kernels in use. If exec fails, go on as is.
  if (const std::string core = fp4kit::engine::blas_coretype_override(); !core.empty()) {
    ::setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    ::execv("/proc/self/exe", argv);
  }
  // A file-size limit or a full quota must surface as a write error with a message, not a kill.
  std::signal(SIGXFSZ, SIG_IGN);
  handle_termination_signals();
  CLI::App app{"fp4kit: quantize Hugging Face checkpoints (MoE first) to NVIDIA NVFP4"};
  app.set_version_flag("--version", std::string("fp4kit ") + FP4KIT_VERSION);
  app.require_subcommand(1);
  fp4kit::cli::CommandList commands;
  fp4kit::cli::register_all(app, commands);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // app.exit prints help/version or the usage error; CLI11's own codes for wrong usage are
    // 100+ (106 missing argument, 109 extras, ...): DESIGN.md promises 2.
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const fp4kit::UsageError& e) {
    fmt::print(stderr, "fp4kit: error: {}\n", e.what());
    return 2;
  } catch (const fp4kit::Error& e) {
    fmt::print(stderr, "fp4kit: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "fp4kit: error: {}\n", e.what());
    return 1;
  }
  return 2;
}
