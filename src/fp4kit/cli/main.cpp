// fp4kit command-line entry point: one file per subcommand, each registering itself here.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <csignal>
#include <cstdio>
#include <exception>

#include "fp4kit/cli/commands.hpp"
#include "fp4kit/error.hpp"

int main(int argc, char** argv) {
  // A file-size limit or a full quota must surface as a write error with a message, not a kill.
  std::signal(SIGXFSZ, SIG_IGN);
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
  } catch (const fp4kit::Error& e) {
    fmt::print(stderr, "fp4kit: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "fp4kit: error: {}\n", e.what());
    return 1;
  }
  return 2;
}
