#!/usr/bin/env bash
# Peak memory of GPTQ's two pipelines on one synthetic Mixtral-shaped MoE (8 layers, hidden 512,
# 8 experts top-2, expert intermediate 512, BF16, written by fp4kit-synth): calibrate --hessian raw
# --full-xtx (the whole model's X^T X in memory and in the stats file) + quantize --gptq --stats,
# against quantize --gptq --data (X^T X one layer at a time). Same 16 x 128 calibration tokens;
# the outputs must be byte-identical (checked). Peak RSS and wall time by /usr/bin/time.
# Usage: bench/gptq_layers_memory.sh [fp4kit binary] [fp4kit-synth binary] [shared-data-dir]
set -euo pipefail
B=${1:-build/fp4kit}
S=${2:-build/fp4kit-synth}
D=${3:-../shared/data}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
U16=$D/text/tinystories_val.stories260k.u16
"$S" --model-type mixtral --layers 8 --hidden 512 --heads 8 --kv-heads 4 --head-dim 64 \
  --experts 8 --top-k 2 --moe-intermediate 512 --vocab 512 "$W/src" > /dev/null
data="--data $U16 --samples 16 --seq-len 128"
t() {  # label command...: wall time and peak RSS of the command (its own output dropped)
  /usr/bin/time -o "$W/time" -f "$1: %e s wall, peak RSS %M KiB" "${@:2}" > /dev/null 2>&1
  cat "$W/time"
}
# shellcheck disable=SC2086
t "calibrate --full-xtx" "$B" calibrate "$W/src" $data --hessian raw --full-xtx -o "$W/st"
echo "stats file: $(stat -c %s "$W/st") bytes"
t "quantize --gptq --stats" "$B" quantize "$W/src" "$W/a" --weights-only --gptq --stats "$W/st"
# shellcheck disable=SC2086
t "quantize --gptq --data" "$B" quantize "$W/src" "$W/b" --weights-only --gptq $data --report "$W/b.json"
python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["gptq_layer_pass"]; print("layer pass: peak X^T X %d bytes, all layers %d bytes" % (p["peak_stats_bytes"], p["total_stats_bytes"]))' "$W/b.json"
cmp "$W/a/model.safetensors" "$W/b/model.safetensors" && echo "outputs byte-identical"
