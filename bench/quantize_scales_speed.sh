#!/usr/bin/env bash
# `quantize --scales mse` against the default (max) on the same checkpoint, in one run (issue 15:
# target <= 3x the default's time). Uses bench/quantize_e2e.sh's synthetic 4.64 GB bf16
# Qwen3-MoE checkpoint (built if missing); page cache of the input evicted before each timed run.
#   [FP4KIT_BUILD=build] bench/quantize_scales_speed.sh [WORKDIR] [SIZE: 4gb|small]
set -euo pipefail
source "$(dirname "$0")/synthetic_source.sh"
run() {  # label, extra options
  local out=$work/out-scales
  rm -rf "$out" "$out.partial"
  evict "$src"
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" quantize "$src" "$out" --weights-only --verify none $2 > "$work/scales-$1.log" 2>&1
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
max_s=$(run max "")
mse_s=$(run mse "--scales mse")
echo "checkpoint: $src ($(du -sh "$src" | cut -f1)), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 -c "print('default (max): %.2f s   --scales mse: %.2f s   ratio %.2f' % ($max_s, $mse_s, $mse_s / $max_s))"
rm -rf "$work/out-scales"
