#!/usr/bin/env bash
# The io tests (bad files included) under AddressSanitizer + UndefinedBehaviorSanitizer:
# builds only test_io in build-asan/ with -DFP4KIT_SANITIZE=ON and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFP4KIT_SANITIZE=ON \
  -DFP4KIT_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan --target test_io -j "$(nproc)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  build-asan/tests/test_io
