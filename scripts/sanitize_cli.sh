#!/usr/bin/env bash
# The CLI tests (tests/cli: every issue-14 hardening test among them) and the text tests under
# AddressSanitizer + UndefinedBehaviorSanitizer: builds the fp4kit executable, test_cli and
# test_text in build-asan/ with -DFP4KIT_SANITIZE=ON and runs them; the CLI tests then run the
# sanitized executable, which aborts (a failed test) on any finding. Not part of scripts/test.sh
# (it takes far longer than CI allows); results: bench/results/sanitizers_cli_2026-12-03.md.
#   scripts/sanitize_cli.sh [CTEST_REGEX]
# The Python tests that drive the executable run it sanitized with
#   FP4KIT_BIN=build-asan/fp4kit pytest python/tests   (helpers fp4kit-* beside it: link build/'s)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFP4KIT_SANITIZE=ON \
  -DFP4KIT_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan --target fp4kit test_cli test_text -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan -L 'cli|text' ${1:+-R "$1"} -j "$(nproc)" --output-on-failure --timeout 1800
