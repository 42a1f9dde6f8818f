#!/usr/bin/env bash
# Peak RSS of `fp4kit calibrate` on a DeepSeek-V3-shaped synthetic FP8 checkpoint with the real
# layer dimensions (hidden 7168, MLA: 128 heads, q-LoRA 1536, kv-LoRA 512; 3 dense layers of
# intermediate 18432, then 2 MoE layers of 256 routed experts of 2048, top-8, one shared expert;
# FP8 E4M3 with 128 x 128 block scales as DeepSeek ships it; vocab 32768), against the bound the
# engine states before it runs (its "memory:" line: activations + the largest weights decoded at
# once). Needs ~27 GB of disk under DIR.
#   bench/calibrate_deepseek_memory.sh [BUILD_DIR] [DIR] [SEQ_LEN] [SAMPLES]
set -euo pipefail
build=${1:-build}
dir=${2:-/tmp/fp4kit-dsv3-synth}
seq=${3:-32}
samples=${4:-2}
[ -f "$dir/config.json" ] || "$build/fp4kit-synth" "$dir" --model-type deepseek_v3 --layers 5 \
  --dense-layers 3 --hidden 7168 --experts 256 --top-k 8 --moe-intermediate 2048 --vocab 32768 \
  --shard-gb 4
du -sh "$dir"
ids=$(mktemp --suffix .u32)
python3 - "$ids" "$((seq * samples))" <<'PY'
import random, struct, sys
random.seed(1)
open(sys.argv[1], "wb").write(struct.pack(f"<{int(sys.argv[2])}I", *[random.randrange(32768) for _ in range(int(sys.argv[2]))]))
PY
/usr/bin/time -v "$build/fp4kit" calibrate "$dir" --data "$ids" --samples "$samples" \
  --seq-len "$seq" -o "$(mktemp --suffix .safetensors)" 2>&1 |
  grep -E "calibrate:|memory:|layer |time:|Maximum resident|Elapsed"
rm -f "$ids"
