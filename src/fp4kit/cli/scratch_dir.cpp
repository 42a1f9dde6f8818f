#include "fp4kit/cli/scratch_dir.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <system_error>

#include "fp4kit/cli/subprocess.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::cli {

namespace fs = std::filesystem;

namespace {
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
int g_signal_pipe = -1;
struct sigaction g_previous[3];

// Only async-signal-safe work here: the watcher thread does the rest.
void on_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = write(g_signal_pipe, &b, 1);
}

// Removes what the demo wrote. A step may still be writing when a signal arrives (its child
// was just told to stop), so retry briefly while entries keep appearing.
void remove_contents(const fs::path& dir, bool remove_dir) {
  for (int attempt = 0; attempt < 40; ++attempt) {
    std::error_code ec;
    if (remove_dir) {
      fs::remove_all(dir, ec);
      if (!fs::exists(dir, ec)) return;
    } else {
      for (const auto& e : fs::directory_iterator(dir, ec)) fs::remove_all(e.path(), ec);
      if (fs::is_empty(dir, ec)) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}
}  // namespace

ScratchDir::ScratchDir(const std::string& requested, const std::string& prefix) {
  if (requested.empty()) {
    std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (!mkdtemp(tmpl.data()))
      throw Error("cannot create a temporary directory " + tmpl);
    path_ = tmpl;
    created_ = true;
  } else {
    path_ = fs::absolute(requested);
    if (fs::exists(path_) && (!fs::is_directory(path_) || !fs::is_empty(path_)))
      throw Error(path_.string() + " exists and is not an empty directory");
    created_ = !fs::exists(path_);
    fs::create_directories(path_);
  }
  if (pipe2(pipe_, O_CLOEXEC) != 0) {
    remove_contents(path_, created_);
    throw Error("cannot create a pipe for the signal watcher");
  }
  g_signal_pipe = pipe_[1];
  watcher_ = std::thread([this] {
    unsigned char sig = 0;
    while (read(pipe_[0], &sig, 1) < 0) {
    }
    if (sig == 0) return;  // the owner is done
    kill_running_child();
    remove_contents(path_, created_);
    std::fprintf(stderr, "\nfp4kit: interrupted (signal %d); removed %s\n", sig,
                 path_.c_str());
    std::_Exit(128 + sig);
  });
  for (size_t i = 0; i < std::size(kSignals); ++i) {
    struct sigaction sa = {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(kSignals[i], &sa, &g_previous[i]);
  }
}

ScratchDir::~ScratchDir() {
  for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
  const unsigned char stop = 0;
  [[maybe_unused]] const ssize_t n = write(pipe_[1], &stop, 1);
  watcher_.join();  // returns at once, or never (a signal came first and the watcher exits)
  close(pipe_[0]);
  close(pipe_[1]);
  g_signal_pipe = -1;
  if (!keep_) remove_contents(path_, created_);
}

}  // namespace fp4kit::cli
