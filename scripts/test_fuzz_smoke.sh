#!/usr/bin/env bash
# Fuzz smoke for CI: builds the io fuzzers (clang-14, libFuzzer + ASan/UBSan) and runs each one
# for a fixed number of inputs with a fixed seed, starting from the committed seed corpus.
# New inputs go to a temporary directory, never into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang++-14 >/dev/null; then
  echo "clang++-14 missing (apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 1
fi
fuzz/build.sh build-fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in safetensors_header:header index:index; do
  name=${target%%:*}
  corpus=${target##*:}
  mkdir -p "$work/$corpus"
  echo "== fuzz smoke: ${name}_fuzz"
  build-fuzz/${name}_fuzz -runs=20000 -seed=1 -max_len=4096 -dict=fuzz/safetensors.dict \
    -print_final_stats=1 "$work/$corpus" "fuzz/corpus/$corpus" 2>&1 | tail -n 4
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz smoke failed: $name" >&2; exit 1; }
done
echo "fuzz smoke: OK"
