#!/usr/bin/env bash
# Builds the libFuzzer targets of the io layer with clang-14 (ASan + UBSan + libFuzzer) into
# build-fuzz/ (or $1). They need only the parsers, so they are compiled directly from their
# sources instead of through the gcc-built layer libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-fuzz}
mkdir -p "$out"
CXX=${FUZZ_CXX:-clang++-14}
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -Isrc)
common=(src/fp4kit/io/json_strict.cpp src/fp4kit/numeric/dtype.cpp)
"$CXX" "${flags[@]}" fuzz/safetensors_header_fuzz.cpp src/fp4kit/io/safetensors_reader.cpp \
  "${common[@]}" -lfmt -o "$out/safetensors_header_fuzz" &
"$CXX" "${flags[@]}" fuzz/index_fuzz.cpp src/fp4kit/io/safetensors_index.cpp \
  "${common[@]}" -lfmt -o "$out/index_fuzz" &
wait %1 && wait %2
echo "fuzzers in $out/: safetensors_header_fuzz index_fuzz"
