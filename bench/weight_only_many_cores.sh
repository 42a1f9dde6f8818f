#!/usr/bin/env bash
# Weight-only quantize against the I/O floor in one run, page cache WARM (issue 14's setting:
# the source was just written or read): per run, `cat` of the source shards to /dev/null (read
# floor), `dd` of as many bytes as fp4kit writes, fsynced (write floor), then fp4kit quantize
# --weights-only with --verify none and with the default (structural) verify. The model:
# bench/make_bench_model.py (GPU machine) or fp4kit-synth with the same shape.
#   bench/weight_only_many_cores.sh FP4KIT SRC WORK [RUNS]
set -euo pipefail
bin=$1; src=$2; work=$3; runs=${4:-3}
mkdir -p "$work"
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
cat "$src"/*.safetensors > /dev/null
echo "cores: $(nproc); input: $(cat "$src"/*.safetensors | wc -c) bytes"
echo "| run | cat (read floor) | dd+fsync (write floor) | read+write | fp4kit --verify none | fp4kit default (structural) |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$runs"); do
  t0=$(now); cat "$src"/*.safetensors > /dev/null; t1=$(now)
  rm -rf "$work/o1" "$work/o2"
  /usr/bin/time -f "%e s, peak RSS %M KB" -o "$work/t1" "$bin" quantize "$src" "$work/o1" \
    --weights-only --verify none > "$work/log1" 2>&1
  out_bytes=$(cat "$work/o1"/*.safetensors | wc -c)
  t2=$(now); dd if=/dev/zero of="$work/dd" bs=16M count=$(( (out_bytes + 16777215) / 16777216 )) \
    conv=fsync status=none; t3=$(now); rm -f "$work/dd"
  t4=$(now); "$bin" quantize "$src" "$work/o2" --weights-only > "$work/log2" 2>&1; t5=$(now)
  t6=$(now); rm -rf "$work/o1"; "$bin" quantize "$src" "$work/o1" --weights-only --verify none \
    > "$work/log1" 2>&1; t7=$(now)
  echo "| $r | $(secs $t0 $t1) s | $(secs $t2 $t3) s | $(python3 -c "print(f'{$t1-$t0+$t3-$t2:.2f}')") s | $(secs $t6 $t7) s | $(secs $t4 $t5) s |"
done
echo "fp4kit --verify none, /usr/bin/time of the first run: $(cat "$work/t1")"
tail -4 "$work/log2"
