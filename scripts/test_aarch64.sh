#!/usr/bin/env bash
# Cross-builds ONLY the numeric library and its tests for aarch64 (DGX Spark is ARM) and runs them
# under qemu-user, so the NEON, SVE and SVE2 paths of the Highway kernels are tested, not assumed.
# arm64 libraries come from Debian multiarch. Idempotent; run as root on Debian 12 (the install
# step is skipped when everything is present). Build directory: build-aarch64/.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST_PACKAGES=(g++-aarch64-linux-gnu qemu-user cmake ninja-build)
ARM_PACKAGES=(libhwy-dev:arm64 libtbb-dev:arm64 libgtest-dev:arm64 librapidcheck-dev:arm64)
missing=()
for p in "${HOST_PACKAGES[@]}" "${ARM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test_aarch64: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "== installing for the aarch64 cross build: ${missing[*]}"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

echo "== aarch64 cross build of the numeric layer (build-aarch64/)"
cmake -S . -B build-aarch64 -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64.cmake" \
  -DFP4KIT_NUMERIC_ONLY=ON -DFP4KIT_BUILD_BENCH=OFF -DFP4KIT_BUILD_CLI=OFF >/dev/null
cmake --build build-aarch64 -j "$(nproc)" --target test_numeric test_numeric_cuda_oracle

bin=build-aarch64/tests/test_numeric
# ELF e_machine (2 bytes at offset 18) is 183 for aarch64 (no dependency on `file`).
[ "$(od -An -t u2 -j 18 -N 2 "$bin" | tr -d ' ')" = 183 ] ||
  { echo "test_aarch64: $bin is not an aarch64 binary" >&2; exit 1; }

# qemu-user without -L: the loader and glibc are Debian's libc6:arm64 (multiarch), which the arm64
# packages above pull in (with the cross toolchain's glibc via -L, qemu 7.2 hangs on pthread_create).
run() {
  local label=$1; shift
  echo "== aarch64 tests under qemu ($label)"
  local log
  log=$(mktemp)
  if ! qemu-aarch64 "$@" "$bin" ${FILTER:+--gtest_filter="$FILTER"} >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    echo "test_aarch64: FAILED ($label)" >&2
    exit 1
  fi
  grep -E "SIMD target|checking target|PASSED|SKIPPED" "$log" | sort | uniq -c
  rm -f "$log"
}

# Full suite on qemu's default CPU ("max": NEON, SVE, SVE2 with 512-bit vectors).
FILTER="" run "cpu max, default SVE vector length"
# The SIMD tests again with other SVE vector lengths (lanes per vector change: 4, 8, 64 floats)
# and on a NEON-only CPU. The 1.2M-row test ran above; here every target runs its own data sets.
FILTER="*Simd*:*Codec*:-*BestTarget*"
run "SVE 128-bit" -cpu max,sve-default-vector-length=16
run "SVE 256-bit" -cpu max,sve-default-vector-length=32
run "SVE 2048-bit" -cpu max,sve-default-vector-length=256
run "NEON only (cortex-a57)" -cpu cortex-a57
qemu-aarch64 build-aarch64/tests/numeric_oracle/test_numeric_cuda_oracle | grep -E "SKIPPED|PASSED" | head -3
echo "== aarch64 numeric tests passed"
