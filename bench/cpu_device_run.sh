#!/usr/bin/env bash
# Runs on the lent machine from a folder holding bin/ (fp4kit, fp4kit-base = an older build,
# sgemm_concurrency from bench/sgemm_concurrency.c), libs.tar.xz (their shared libraries) and
# cpu_calibrate_bench.py: the older build vs this one vs transformers fp32 at 16 threads,
# plus where the time goes (engine phases, sgemm concurrency). Usage: bench/cpu_device_run.sh OUT
set -uo pipefail
dir=$(cd "$(dirname "$0")" && pwd); out=$1
cd "$dir"; [ -d lib ] || tar xJf libs.tar.xz
export LD_LIBRARY_PATH="$dir/lib:${LD_LIBRARY_PATH:-}"
{ date -u; nproc; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|L2|L3|MHz"; grep -o -w 'avx512f\|avx512_bf16\|amx_tile\|avx2' /proc/cpuinfo | sort | uniq -c
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'mkldnn', torch.backends.mkldnn.is_available(), 'mkl', torch.backends.mkl.is_available())"
  OPENBLAS_VERBOSE=2 bin/sgemm_concurrency
  python3 -c "
import torch, time
a = torch.randn(512, 2048); b = torch.randn(1536, 2048)
for n in (1, 16):
    torch.set_num_threads(n); a @ b.T; t = time.perf_counter()
    for _ in range(10): a @ b.T
    print(f'torch matmul 512x1536x2048, {n:2d} threads: {2*512*1536*2048*10/(time.perf_counter()-t)/1e9:.1f} GFLOP/s total')
"; } 2>&1 | tee "$out/bench.txt"
FP4KIT_ENGINE_PROFILE=1 python3 cpu_calibrate_bench.py --fp4kit bin/fp4kit --baseline bin/fp4kit-base --threads 16 --layers 4 --samples 16 --seq-len 512 --batch 8 --work /tmp/fp4kit-cpu-bench 2>&1 | grep -v "^layer [0-9]/" | tee -a "$out/bench.txt"
