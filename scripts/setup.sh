#!/usr/bin/env bash
# One-shot set-up on a fresh Debian 12 machine (as root; safe to run twice):
# Debian packages, the Python venv for the conformance tests, the build, then `fp4kit demo`.
#   scripts/setup.sh            install + build + demo
#   scripts/setup.sh --no-demo  install + build only
set -euo pipefail
cd "$(dirname "$0")/.."
run_demo=1
[ "${1:-}" = "--no-demo" ] && run_demo=0

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libfmt-dev libcli11-dev nlohmann-json3-dev libtbb-dev libhwy-dev libpcre2-dev libicu-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev
  libopenblas-dev
  clang-14 libclang-rt-14-dev
  g++-aarch64-linux-gnu qemu-user
  python3 python3-venv bc time
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

scripts/python_env.sh

echo "== building (build/)"
# FP4KIT_PYTHON: the Python extension in the same tree, packaged as a wheel by
# scripts/test_python_package.sh without compiling again (README, "Python").
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DFP4KIT_PYTHON=ON \
  -DPython_EXECUTABLE="$(cat build/python-venv-path)/bin/python" >/dev/null
cmake --build build -j "$(nproc)"

if [ $run_demo = 1 ]; then
  echo "== fp4kit demo"
  ./build/fp4kit demo
fi
