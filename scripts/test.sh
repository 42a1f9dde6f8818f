#!/usr/bin/env bash
# The full test suite: set-up (idempotent), C++ tests (CTest), the aarch64 numeric tests under
# qemu-user, the sanitizer build of the io tests, the fuzz smoke, and the Python conformance tests
# against the real third-party tools. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-demo

echo "== C++ tests (CTest)"
ctest --test-dir build --output-on-failure -j "$(nproc)"

for extra in scripts/test_*.sh; do
  [ -x "$extra" ] || continue
  echo "== $extra"
  "$extra"
done

echo "== llama.cpp for the GGUF tests (built once, cached outside the clone)"
scripts/llama_cpp.sh

echo "== Python conformance tests"
venv=$(cat build/python-venv-path)
FP4KIT_BIN="$PWD/build/fp4kit" "$venv/bin/python" -m pytest -q python/tests
