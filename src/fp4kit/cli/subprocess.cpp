#include "fp4kit/cli/subprocess.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "fp4kit/error.hpp"

extern char** environ;

namespace fp4kit::cli {

namespace {
std::atomic<pid_t> g_running{0};

// posix_spawn_file_actions_t / posix_spawnattr_t released on every path.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};
}  // namespace

std::string self_executable() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

void kill_running_child() {
  const pid_t pid = g_running.load();
  if (pid > 0) kill(pid, SIGTERM);
}

ChildResult run_child(const std::string& program, const std::vector<std::string>& args,
                      const std::filesystem::path& cwd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    throw Error(std::string("cannot create a pipe: ") + std::strerror(errno));
  SpawnSetup s;
  posix_spawn_file_actions_adddup2(&s.actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&s.actions, fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addchdir_np(&s.actions, cwd.c_str());
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setsigdefault(&s.attr, &defaults);
  posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, program.c_str(), &s.actions, &s.attr, argv.data(), environ);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    throw Error("cannot start " + program + ": " + std::strerror(rc));
  }
  g_running.store(pid);
  ChildResult r;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) {
      r.output.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_running.store(0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace fp4kit::cli
