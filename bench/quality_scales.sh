#!/usr/bin/env bash
# Block-scale methods against max (issue 15) on the real stories260K checkpoints, by `fp4kit eval`:
# PPL, mean KLD and top-1 agreement against the BF16 model for quantize --scales max | mse |
# hessian (also with --global-norm 256, and with --gptq), weights-only (W4A16) and W4A4.
# Eval: first 30,000 tokens of tinystories_val.stories260k.u16, 256-token windows; calibration
# (input scales, Hessian blocks, X^T X): 64 x 256 tokens from token 100,000 on (disjoint), as
# bench/quality_table.sh. W4A16 uses `calibrate --hessian raw --full-xtx`, W4A4 `--hessian w4a4`.
# VARIANTS (";"-separated quantize options) picks the rows, default: the five scale variants.
# A variant holding the word DATA runs GPTQ layer by layer over the calibration text instead of
# the stats file's X^T X: DATA becomes --data <calibration tokens> --samples 64 --seq-len 256
# (W4A16: no --stats; W4A4: --stats for the input scales only), e.g. "--gptq DATA;--gptq
# --gptq-sequential DATA".
# Usage: [VARIANTS="..."] bench/quality_scales.sh [fp4kit binary] [shared-data-dir] [models...]
set -euo pipefail
B=${1:-build/fp4kit}
D=${2:-../shared/data}
shift 2 || true
models=${*:-stories260k-llama stories260k-mixtral stories260k-qwen2moe stories260k-qwen3moe stories260k-mixtral-routed}
VARIANTS=${VARIANTS:-"--scales max;--scales mse;--scales mse --global-norm 256;--scales hessian;--scales hessian --global-norm 256"}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
U16=$D/text/tinystories_val.stories260k.u16
tail -c +200001 "$U16" > "$W/calib.u16"
row() {  # model label dir
  "$B" eval "$3" --base "$src" --data "$U16" --tokens 30000 --ctx 256 --json | python3 -c '
import json, sys
j = json.load(sys.stdin); k = j["kl_divergence"]
print("| %s | %s | %.4f | %.5f ± %.5f | %.2f %% |" % (sys.argv[1], sys.argv[2], j["ppl"]["value"],
      k["kld"]["mean"]["value"], k["kld"]["mean"]["uncertainty"], 100 * k["same_top_p"]["value"]))' "$1" "$2"
}
echo "| model | variant | PPL | mean KLD | same top-1 |"
echo "|---|---|---|---|---|"
for m in $models; do
  src=$D/models/$m
  for h in raw w4a4; do
    "$B" calibrate "$src" --data "$W/calib.u16" --samples 64 --seq-len 256 --hessian $h \
      --full-xtx -o "$W/$h.stats" > /dev/null
  done
  for a in w4a16 w4a4; do
    if [ $a = w4a16 ]; then mode="--weights-only --stats $W/raw.stats"; else mode="--stats $W/w4a4.stats"; fi
    IFS=';' read -ra vs <<< "$VARIANTS"
    for v in "${vs[@]}"; do
      rm -rf "$W/q"
      m2=$mode
      label=${v//DATA/--data}
      # W4A16 reads the stats file only for hessian scales or GPTQ from its X^T X.
      if [[ $a = w4a16 && ( " $v " == *" DATA "* || ( $v != *hessian* && $v != *--gptq* ) ) ]]; then
        m2="--weights-only"
      fi
      v=${v//DATA/--data $W/calib.u16 --samples 64 --seq-len 256}
      # stories260k-qwen3moe's 2^-24 q/k are destroyed by NVFP4 by design (BENCHMARKS.md).
      [ "$m" = stories260k-qwen3moe ] && v="$v --allow-destroyed"
      # shellcheck disable=SC2086
      "$B" quantize "$src" "$W/q" $m2 $v > /dev/null 2>&1
      row "$m" "$a $label" "$W/q"
    done
  done
done
