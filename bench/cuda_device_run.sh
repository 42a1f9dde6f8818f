#!/usr/bin/env bash
# Runs on the GPU machine from a folder holding bin/ (fp4kit, fp4kit-synth, test_cuda built on the
# development machine), libs.tar.xz (their shared libraries) and data/ (the stories260K models and
# token file of shared/data). Usage: bench/cuda_device_run.sh DIR OUT [tests|bench|all]
# Writes OUT/test_cuda.txt (the GPU tests) and OUT/bench.txt (the calibrate benchmark).
set -uo pipefail
dir=$(cd "$1" && pwd); out=$2; what=${3:-all}
cd "$dir"
[ -d lib ] || tar xJf libs.tar.xz
export LD_LIBRARY_PATH="$dir/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
{
  date -u; uname -m; nproc
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv
} | tee "$out/machine.txt"
if [ "$what" = tests ] || [ "$what" = all ]; then
  FP4KIT_SHARED_DATA="$dir/data" ./bin/test_cuda 2>&1 | tee "$out/test_cuda.txt" | grep -E "^\[  (PASSED|FAILED|SKIPPED) |worst|Failure|error|Expected|Which is|actual" | head -80
fi
