#!/usr/bin/env bash
# Quality of fp4kit's NVFP4 output on the real stories260K checkpoints (BENCHMARKS.md, "Quality").
# For each model: BF16 source vs NVFP4 weight-only (W4A16) vs NVFP4 W4A4 (input_scale from
# `fp4kit calibrate`): perplexity, mean KLD and top-1 agreement against the BF16 model.
# Eval: first 30,000 tokens of tinystories_val.stories260k.u16, 256-token windows (the data
# README's PPL protocol). Calibration: 64 x 256 tokens taken from tokens 100,000.. of the same
# file (no overlap with the evaluated tokens).
# Usage: bench/quality_table.sh [build-dir] [shared-data-dir]
set -euo pipefail
B=${1:-build}/fp4kit
D=${2:-../shared/data}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
U16=$D/text/tinystories_val.stories260k.u16
tail -c +200001 "$U16" > "$W/calib.u16"   # token 100,000 onwards (2 bytes per id)
echo "| model | weights | PPL | mean KLD | same top-1 |"
echo "|---|---|---|---|---|"
for m in stories260k-llama stories260k-mixtral stories260k-qwen2moe stories260k-qwen3moe stories260k-mixtral-routed; do
  src=$D/models/$m
  "$B" calibrate "$src" --data "$W/calib.u16" --samples 64 --seq-len 256 -o "$W/$m.stats" > /dev/null
  # stories260k-qwen3moe's 2^-24 q/k are destroyed by their shared scale: quantize refuses that
  # by default; the table shows what committing them anyway does.
  keep=""; [ "$m" = stories260k-qwen3moe ] && keep=--allow-destroyed
  "$B" quantize "$src" "$W/$m-w4a16" --weights-only $keep > /dev/null 2>&1
  "$B" quantize "$src" "$W/$m-w4a4" --stats "$W/$m.stats" $keep > /dev/null 2>&1
  base_json=$("$B" eval "$src" --data "$U16" --tokens 30000 --ctx 256 --json)
  ppl=$(echo "$base_json" | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ppl"]["value"])')
  echo "| $m | BF16 | $ppl | 0 | 100 % |"
  for v in w4a16 w4a4; do
    j=$("$B" eval "$W/$m-$v" --base "$src" --data "$U16" --tokens 30000 --ctx 256 --json)
    echo "$j" | python3 -c '
import json, sys
j = json.load(sys.stdin); k = j["kl_divergence"]
label = {"w4a16": "NVFP4 weight-only (W4A16)", "w4a4": "NVFP4 W4A4"}[sys.argv[2]]
print("| %s | %s | %.4f ± %.4f | %.5f ± %.5f | %.2f ± %.2f %% |" % (sys.argv[1], label,
      j["ppl"]["value"], j["ppl"]["uncertainty"], k["kld"]["mean"]["value"],
      k["kld"]["mean"]["uncertainty"], 100 * k["same_top_p"]["value"],
      100 * k["same_top_p"]["uncertainty"]))' "$m" "$v"
  done
done
