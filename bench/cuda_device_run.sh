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
#   memcheck  the GPU memory plan with FP4KIT_GPU_MEMORY_LIMIT on bench's model (64 x 512): a limit
#             neither plan fits is refused; a limit halfway between the two needs the refusal
#             names runs host-held, its statistics file compared byte for byte with the resident
#             run's (both with FP4KIT_GROUP_TOKENS=8192: the same groups, 4 of them, so that host-held's two
#             windows need less than all tokens); eval logits of stories260k-llama resident vs FP4KIT_ACTIVATIONS=host
#             (OUT/memcheck.txt; writes bench's model when it is missing)
#   families  every family, GPU vs CPU engine (OUT/families.txt)
#   million   512 x 2048 tokens beside transformers (OUT/million.txt; needs bench's model)
#   hostmillion  512 x 2048 tokens resident and FP4KIT_ACTIVATIONS=host, groups of 16384 tokens
#             in both, statistics compared
#             (OUT/hostmillion.txt; needs bench's model)
# default: all of them but hostmillion, in that order. Each step has a time limit
# (STEP_TIMEOUT_<STEP> seconds).
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
# bench's model and token ids (as cuda_calibrate_bench.py writes them) for SAMPLES x SEQ_LEN
bench_inputs() {
  mkdir -p "$work"
  [ -d "$work/qwen3moe-4l" ] || python3 make_bench_model.py "$work/qwen3moe-4l"
  python3 -c "import numpy as np, sys; n = 2 * $1 * $2; np.random.default_rng(0).integers(0, 151936, n, dtype=np.uint32).tofile(sys.argv[1])" "$3"
}
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
    bench_inputs 64 512 "$work/ids.u32"
    calib=(./bin/fp4kit calibrate "$work/qwen3moe-4l" --data "$work/ids.u32" --samples 64 --seq-len 512 --device cuda)
    echo "\$ FP4KIT_GROUP_TOKENS=8192 FP4KIT_GPU_MEMORY_LIMIT=2000000000 fp4kit calibrate qwen3moe-4l --samples 64 --seq-len 512 --device cuda"
    FP4KIT_GROUP_TOKENS=8192 FP4KIT_GPU_MEMORY_LIMIT=2000000000 timeout 60 "${calib[@]}" -o "$work/limited.stats" > "$work/refused.txt" 2>&1
    echo "exit $?"; cat "$work/refused.txt"
    test -e "$work/limited.stats" && echo "OUTPUT WRITTEN (wrong)" || echo "no output written"
    # halfway between the resident and the host-held needs that the refusal names
    limit=$(python3 -c "
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r'needs about ([\d.]+) GiB with the hidden states.*?and ([\d.]+) GiB with them in host memory', t, re.S)
print(int(((float(m.group(1)) + float(m.group(2))) / 2 + 0.5) * 2**30))" "$work/refused.txt")
    for run in resident host; do
      if [ $run = resident ]; then lim_env=""; else lim_env="FP4KIT_GPU_MEMORY_LIMIT=$limit"; fi
      # the same groups in both runs (a resident run on a GPU is otherwise one group of all tokens)
      echo "\$ FP4KIT_GROUP_TOKENS=8192 $lim_env fp4kit calibrate qwen3moe-4l --samples 64 --seq-len 512 --device cuda"
      env FP4KIT_GROUP_TOKENS=8192 $lim_env /usr/bin/time -f "whole process %e s, peak RSS %M KB" timeout 60 "${calib[@]}" -o "$work/$run.stats" 2>&1 | tee "$work/$run.log"
      echo "exit ${PIPESTATUS[0]}"
    done
    grep -q "GPU memory plan: host-held" "$work/host.log" || echo "HOST-HELD NOT CHOSEN under the limit: the comparison below is not host-held vs resident"
    cmp "$work/resident.stats" "$work/host.stats" && echo "statistics files identical: host-held = resident, byte for byte"
    ev=(./bin/fp4kit eval data/models/stories260k-llama --data data/text/tinystories_val.stories260k.u16 --ctx 256 --chunks 40 --device cuda --dump-logits)
    for run in resident host; do
      echo "\$ FP4KIT_ACTIVATIONS=$run fp4kit eval stories260k-llama --ctx 256 --chunks 40 --device cuda --dump-logits"
      FP4KIT_ACTIVATIONS=$run timeout 60 "${ev[@]}" "$work/$run.logits"
      echo "exit $?"
    done
    cmp "$work/resident.logits" "$work/host.logits" && echo "eval logits identical: host-held = resident, byte for byte"
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
if has hostmillion; then
  echo "== hostmillion"
  {
    bench_inputs 512 2048 "$work/ids_1m.u32"
    calib=(./bin/fp4kit calibrate "$work/qwen3moe-4l" --data "$work/ids_1m.u32" --samples 512 --seq-len 2048 --device cuda)
    for run in resident host; do
      echo "\$ FP4KIT_GROUP_TOKENS=16384 FP4KIT_ACTIVATIONS=$run fp4kit calibrate qwen3moe-4l --samples 512 --seq-len 2048 --device cuda"
      FP4KIT_GROUP_TOKENS=16384 FP4KIT_ACTIVATIONS=$run /usr/bin/time -f "whole process %e s, peak RSS %M KB" timeout "$(lim hostmillion 120)" "${calib[@]}" -o "$work/$run-1m.stats"
      echo "exit $?"
    done
    cmp "$work/resident-1m.stats" "$work/host-1m.stats" && echo "statistics files identical: host-held = resident, byte for byte"
  } 2>&1 | tee "$out/hostmillion.txt"
fi
date -u | tee -a "$out/machine.txt"
