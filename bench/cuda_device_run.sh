#!/usr/bin/env bash
# Runs on the GPU machine from a folder DIR holding bin/ (fp4kit, test_cuda built on the
# development machine), libs.tar.xz (their shared libraries), data/ (the stories260K models and
# token file of shared/data), the bench scripts (cuda_calibrate_bench.py, cuda_family_check.py,
# make_bench_model.py) and tests/ (python/tests: tiny_models.py and the engine tests whose model
# builders the family check uses).
# Usage: bench/cuda_device_run.sh DIR OUT [steps], steps a comma list of
#   tests     the GPU tests (OUT/test_cuda.txt)
#   bench     calibrate on the model, 64 x 512, prefetch on and off, + quantize, beside
#             transformers (OUT/bench.txt)
#   memcheck  the GPU memory check with FP4KIT_GPU_MEMORY_LIMIT (OUT/memcheck.txt; needs bench's model)
#   families  every family, GPU vs CPU engine (OUT/families.txt)
#   million   512 x 2048 tokens beside transformers (OUT/million.txt; needs bench's model)
# default: all of them in that order. Each step has a time limit (STEP_TIMEOUT_<STEP> seconds).
set -uo pipefail
dir=$(cd "$1" && pwd); out=$2; steps=${3:-tests,bench,memcheck,families,million}
work=${WORK:-/tmp/fp4kit-cuda-bench}
cd "$dir"
[ -d lib ] || tar xJf libs.tar.xz
export LD_LIBRARY_PATH="$dir/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
{
  date -u; uname -m; nproc
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$out/machine.txt"
has() { [[ ",$steps," == *",$1,"* ]]; }
lim() { local v="STEP_TIMEOUT_${1^^}"; echo "${!v:-$2}"; }
if has tests; then
  echo "== tests"
  FP4KIT_SHARED_DATA="$dir/data" timeout "$(lim tests 120)" ./bin/test_cuda 2>&1 | tee "$out/test_cuda.txt" \
    | grep -E "^\[  (PASSED|FAILED|SKIPPED) |worst|Failure|error|Expected|Which is|actual" | head -80
fi
if has bench; then
  echo "== bench"
  timeout "$(lim bench 200)" python3 cuda_calibrate_bench.py --bin "$dir/bin" --work "$work" \
    --no-prefetch-run 2>&1 | tee "$out/bench.txt" | grep -v "^ \|^\[\|^{\|^}"
fi
if has memcheck; then
  echo "== memcheck"
  {
    date -u
    echo "\$ FP4KIT_GPU_MEMORY_LIMIT=2000000000 fp4kit calibrate qwen3moe-4l --samples 64 --seq-len 512 --device cuda"
    FP4KIT_GPU_MEMORY_LIMIT=2000000000 timeout 60 ./bin/fp4kit calibrate "$work/qwen3moe-4l" --data "$work/ids.u32" \
      --samples 64 --seq-len 512 --device cuda -o "$work/limited.stats"
    echo "exit $?"
    test -e "$work/limited.stats" && echo "OUTPUT WRITTEN (wrong)" || echo "no output written"
  } 2>&1 | tee "$out/memcheck.txt"
fi
if has families; then
  echo "== families"
  timeout "$(lim families 240)" python3 cuda_family_check.py --bin "$dir/bin" --tiny "$dir/tests" \
    --work /tmp/fp4kit-families 2>&1 | tee "$out/families.txt" | grep -E "FAILED|failed|all families|Error"
fi
if has million; then
  echo "== million"
  timeout "$(lim million 240)" python3 cuda_calibrate_bench.py --bin "$dir/bin" --work "$work" \
    --samples 512 --seq-len 2048 --runs 1 --skip-quantize --batch 8 --passes 2 2>&1 \
    | tee "$out/million.txt" | grep -v "^ \|^\[\|^{\|^}"
fi
date -u | tee -a "$out/machine.txt"
