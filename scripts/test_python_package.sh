#!/usr/bin/env bash
# The Python package (`pip install .`, issue 17): builds the wheel from build/ (its fp4kit
# executable and fp4kit._core extension, configured with -DFP4KIT_PYTHON=ON by setup.sh: nothing is
# compiled again), installs it into a fresh venv with pip's --no-index (no compiler, no network),
# and runs python/tests/package there against the CLI in build/. numpy, pytest and the reference
# packages come from the cached test venv through a .pth file (they are not what is tested).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(cat build/python-venv-path)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== wheel from build/ (FP4KIT_PREBUILT_DIR)"
"$venv/bin/pip" wheel -q --no-build-isolation --no-deps --no-index -w "$tmp/dist" \
  -Ccmake.define.FP4KIT_PREBUILT_DIR="$PWD/build" -Cbuild-dir="$tmp/skbuild" .
wheel=$(ls "$tmp"/dist/fp4kit-*.whl)
echo "$(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB"

echo "== fresh venv"
"$venv/bin/python" -m venv --without-pip "$tmp/venv"
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
"$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))' > "$site/zz_test_venv.pth"
"$venv/bin/pip" --python "$tmp/venv/bin/python" install -q --no-index --no-deps "$wheel"

echo "== python/tests/package"
PATH="$tmp/venv/bin:$PATH" FP4KIT_PACKAGE_TESTS=1 FP4KIT_BIN="$PWD/build/fp4kit" \
  "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider python/tests/package
