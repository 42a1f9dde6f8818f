#pragma once
// Registration of subcommands. Each cli/<name>.cpp defines add_<name>(app) which creates its
// CLI11 subcommand, binds options to a state it owns, and returns the function that runs it.
#include <CLI/CLI.hpp>

#include <functional>
#include <vector>

namespace fp4kit::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;  // returns the exit code; throws fp4kit::Error for bad input
};
using CommandList = std::vector<Command>;

// --threads N, the same rule in every command: 0 (default) = all cores, negative is wrong usage.
inline CLI::Option* add_threads_option(CLI::App* sub, int& threads) {
  return sub->add_option("--threads", threads, "worker threads (default 0: all cores)")
      ->check(CLI::NonNegativeNumber);
}

Command add_quantize(CLI::App& app);
Command add_verify(CLI::App& app);
Command add_inspect(CLI::App& app);
Command add_calibrate(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_demo(CLI::App& app);

inline void register_all(CLI::App& app, CommandList& out) {
  out.push_back(add_quantize(app));
  out.push_back(add_verify(app));
  out.push_back(add_inspect(app));
  out.push_back(add_calibrate(app));
  out.push_back(add_eval(app));
  out.push_back(add_demo(app));
}

}  // namespace fp4kit::cli
