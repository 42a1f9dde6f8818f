#!/usr/bin/env bash
# BMM experts (gpt-oss / Llama-4 layout, issue 8) end to end against the I/O floor, next to the
# same parameters in the fused [E, 2I, H] layout (split into 2-D entries, no transposes), same run.
#   [FP4KIT_BUILD=build] [PYTHON=python3] bench/quantize_bmm_e2e.sh [WORKDIR] [LAYERS] [EXPERTS]
# Sources (bench/make_bmm_sources.py, hidden = intermediate = 2880 as gpt-oss): BF16 BMM, MXFP4,
# fused BF16. Page cache evicted before every step; floor = cat of the input + dd/fsync of as
# many bytes as fp4kit writes; fp4kit quantize --weights-only --verify none.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/fp4kit-bench-bmm}
layers=${2:-4}
experts=${3:-8}
bin=${FP4KIT_BUILD:-$root/build}/fp4kit
py=${PYTHON:-python3}
mkdir -p "$work"
"$py" "$root/bench/make_bmm_sources.py" "$work" "$layers" "$experts" 2880 2880
evict() { for f in "$1"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done; }
now() { date +%s.%N; }
printf "machine: %s, %s cores; date: %s; %s layers x %s experts (H = I = 2880)\n" \
  "$(lscpu | grep 'Model name' | sed 's/.*: *//')" "$(nproc)" "$(date -u +%F)" "$layers" "$experts"
for kind in bmm mxfp4 fused; do
  s=$work/$kind out=$work/out-$kind
  in_bytes=$(du -cb "$s"/*.safetensors | tail -1 | cut -f1)
  evict "$s"; t0=$(now); cat "$s"/*.safetensors > /dev/null; t1=$(now)
  rm -rf "$out" "$out.partial"; evict "$s"
  /usr/bin/time -f "%e %M" -o "$work/time-$kind.txt" "$bin" quantize "$s" "$out" --weights-only \
    --verify none > "$work/quantize-$kind.log" 2>&1
  read -r fp_s rss_kb < "$work/time-$kind.txt"
  out_bytes=$(du -cb "$out"/*.safetensors | tail -1 | cut -f1)
  t2=$(now); dd if=/dev/zero of="$work/write-floor.bin" bs=16M count=$((out_bytes / 16777216 + 1)) \
    conv=fsync status=none; t3=$(now); rm -f "$work/write-floor.bin" 
  python3 - "$kind" "$in_bytes" "$out_bytes" "$t0" "$t1" "$t2" "$t3" "$fp_s" "$rss_kb" <<'PY'
import sys
k, ib, ob, t0, t1, t2, t3, fp, rss = sys.argv[1], *map(float, sys.argv[2:])
floor = (t1 - t0) + (t3 - t2)
print(f"{k:6} input {ib/1e9:.2f} GB -> {ob/1e9:.2f} GB | floor {floor:.2f} s | fp4kit {fp:.2f} s "
      f"({ib/1e9/fp:.2f} GB/s in) | floor/fp4kit {floor/fp:.2f} | peak RSS {rss/1024:.0f} MB")
PY
  rm -rf "$out"
done
