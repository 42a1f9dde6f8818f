// fp4kit inspect (placeholder until its issue lands: fails loudly, never pretends).
#include "fp4kit/cli/commands.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::cli {

Command add_inspect(CLI::App& app) {
  auto* sub = app.add_subcommand("inspect", "inspect (not implemented yet)");
  sub->allow_extras();
  return {sub, [] () -> int { throw Error("'inspect' is not implemented yet"); }};
}

}  // namespace fp4kit::cli
