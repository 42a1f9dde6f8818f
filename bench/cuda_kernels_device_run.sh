#!/usr/bin/env bash
# The device run of the GPU backend's Gated DeltaNet and weight-decoding kernels (issue 13), on the
# GPU machine from a folder DIR laid out as bench/cuda_device_run.sh's (bin/ with fp4kit and
# test_cuda of this build, libs.tar.xz, data/, tests/ = python/tests, the bench scripts) plus
# bin/fp4kit.before (the build before these kernels: GDN on the host, quantized sources decoded
# on the host) and make_source_models.py.
# Usage: bench/cuda_kernels_device_run.sh DIR OUT
#   OUT/test_cuda.txt  the GPU tests (the kernels against the CPU backend / host decoding)
#   OUT/families.txt   the GDN families and the quantized sources, GPU vs CPU engine
#   OUT/timing.txt     fp4kit calibrate --device cuda, before and after, on a Qwen3-Next-shaped
#                      bf16 model and an FP8 block-scaled DeepSeek-V3 (make_source_models.py bench)
# Step limits: STEP_TIMEOUT_TESTS (60 s), _FAMILIES (90 s), _TIMING (70 s).
set -uo pipefail
dir=$(cd "$1" && pwd); out=$2
work=${WORK:-/tmp/fp4kit-kernels}
mkdir -p "$work"
cd "$dir"
[ -d lib ] || tar xJf libs.tar.xz
export LD_LIBRARY_PATH="$dir/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
{
  date -u; uname -m; nproc
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$out/machine.txt"
lim() { local v="STEP_TIMEOUT_${1^^}"; echo "${!v:-$2}"; }
# The timing models, written while the tests and the family check run.
( for k in qwen3_next deepseek_v3_fp8; do
    python3 make_source_models.py "$k" bench "$work/$k" --tiny "$dir/tests" > "$work/$k.log" 2>&1
  done
  python3 -c "import numpy as np; np.random.default_rng(0).integers(0, 32768, 1 << 20, dtype=np.uint32).tofile('$work/ids.u32')"
) &
models=$!
echo "== tests"
FP4KIT_SHARED_DATA="$dir/data" timeout "$(lim tests 60)" ./bin/test_cuda > "$out/test_cuda.txt" 2>&1
echo "exit $?" >> "$out/test_cuda.txt"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |worst|Failure|Expected|Which is|actual|exit" "$out/test_cuda.txt" | head -60
echo "== families"
timeout "$(lim families 90)" python3 cuda_family_check.py --bin "$dir/bin" --tiny "$dir/tests" \
  --work "$work/fam" --families qwen3_next,qwen3_5_moe,deepseek_v3_fp8,gpt_oss_mxfp4,llama_nvfp4 \
  > "$out/families.txt" 2>&1
echo "exit $?" >> "$out/families.txt"
grep -vE "^Writing|it/s\]$" "$out/families.txt" | tail -40
echo "== timing"
wait $models
deadline=$(( $(date +%s) + $(lim timing 70) ))
{
  cat "$work"/*.log | grep -iE "error|Traceback" | head
  for m in qwen3_next deepseek_v3_fp8; do
    du -sh "$work/$m"
    for b in fp4kit fp4kit.before fp4kit; do  # the first: page cache warm
      left=$(( deadline - $(date +%s) ))
      if [ "$left" -le 2 ]; then echo "skipped: step time limit"; continue; fi
      t0=$(date +%s.%N)
      echo "\$ $b calibrate $m --data ids.u32 --samples 16 --seq-len 512 --device cuda"
      timeout "$(( left < 40 ? left : 40 ))" "./bin/$b" calibrate "$work/$m" --data "$work/ids.u32" \
        --samples 16 --seq-len 512 --device cuda -o "$work/$m.$b.stats" 2>&1 | grep -E "time:|rror"
      echo "whole process: $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s"
    done
    # The same model's statistics before (host GDN / host decoding) and after (GPU kernels).
    python3 -c "
import sys; sys.path.insert(0, '.'); import cuda_family_check as c
a, b = c.stats('$work/$m.fp4kit.stats'), c.stats('$work/$m.fp4kit.before.stats')
moved = [e[: -len('.routed_tokens')] for e, n in b[2].items() if a[2].get(e) != n]
ea, es = c.worst(a, b, moved)
print(f'$m after vs before: {len(b[0])} linears, worst amax {ea:.2e}, worst sum of squares {es:.2e}, '
      f'{len(moved)} experts with other routed counts left out')" 2>&1 | tail -2
  done
} 2>&1 | tee "$out/timing.txt"
date -u | tee -a "$out/machine.txt"
