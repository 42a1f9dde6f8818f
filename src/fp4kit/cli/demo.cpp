// fp4kit demo (placeholder until its issue lands: fails loudly, never pretends).
#include "fp4kit/cli/commands.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::cli {

Command add_demo(CLI::App& app) {
  auto* sub = app.add_subcommand("demo", "demo (not implemented yet)");
  sub->allow_extras();
  return {sub, [] () -> int { throw Error("'demo' is not implemented yet"); }};
}

}  // namespace fp4kit::cli
