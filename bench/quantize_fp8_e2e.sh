#!/usr/bin/env bash
# FP8 -> NVFP4 throughput against the I/O floor, next to the BF16 -> NVFP4 path in the same run
# (issue 8: the FP8 path must keep the quantize benchmark's ratio to the I/O floor within 10%).
#   bench/quantize_fp8_e2e.sh [WORKDIR] [SIZE: 4gb|1gb|small]
# Builds a synthetic BF16 Qwen3-MoE checkpoint, casts it to FP8 with 128x128 block scales
# (fp4kit-fp8-cast, as DeepSeek-V3 / Qwen3-FP8 ship), then for each source, page cache evicted
# before each step (dd iflag=nocache): read floor (cat), write floor (dd + fsync of as many bytes
# as fp4kit writes), fp4kit quantize --weights-only --verify none. Prints both ratios.
# Binaries from $FP4KIT_BUILD (default build/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/fp4kit-bench-fp8}
size=${2:-1gb}
build=${FP4KIT_BUILD:-$root/build}
bin=$build/fp4kit
mkdir -p "$work"
src=$work/src-$size
if [ ! -f "$src/config.json" ]; then
  rm -rf "$src"
  case "$size" in
    4gb) "$build/fp4kit-synth" "$src" --layers 7 --hidden 2048 --heads 16 --kv-heads 4 \
           --head-dim 128 --experts 64 --moe-intermediate 768 --vocab 32000 --shard-gb 2 ;;
    1gb) "$build/fp4kit-synth" "$src" --layers 3 --hidden 2048 --heads 16 --kv-heads 4 \
           --head-dim 128 --experts 32 --moe-intermediate 768 --vocab 32000 --shard-gb 1 ;;
    *)   "$build/fp4kit-synth" "$src" --layers 2 --hidden 512 --heads 8 --kv-heads 2 \
           --head-dim 64 --experts 16 --moe-intermediate 256 --vocab 4096 ;;
  esac
fi
fp8=$work/src-$size-fp8
[ -f "$fp8/config.json" ] || { rm -rf "$fp8"; "$build/fp4kit-fp8-cast" "$src" "$fp8" --shard-gb 1; }

evict() { for f in "$1"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done; }
now() { date +%s.%N; }
secs() { awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }'; }

measure() {  # $1 = label, $2 = source dir
  local s=$2 out=$work/out-$1 in_bytes out_bytes read_s write_s fp_s rss_kb floor_s t0 t1
  in_bytes=$(du -cb "$s"/*.safetensors | tail -1 | cut -f1)
  evict "$s"; t0=$(now); cat "$s"/*.safetensors > /dev/null; t1=$(now)
  read_s=$(echo "$t1 - $t0" | bc -l)
  rm -rf "$out" "$out.partial"; evict "$s"
  /usr/bin/time -v -o "$work/time-$1.txt" "$bin" quantize "$s" "$out" --weights-only \
    --verify none > "$work/quantize-$1.log" 2>&1
  fp_s=$(grep "Elapsed (wall clock)" "$work/time-$1.txt" | awk '{print $NF}' | secs)
  rss_kb=$(grep "Maximum resident set size" "$work/time-$1.txt" | awk '{print $NF}')
  out_bytes=$(du -cb "$out"/*.safetensors | tail -1 | cut -f1)
  t0=$(now); dd if=/dev/zero of="$work/write-floor.bin" bs=16M \
    count=$((out_bytes / 16777216 + 1)) conv=fsync status=none; t1=$(now)
  write_s=$(echo "$t1 - $t0" | bc -l); rm -f "$work/write-floor.bin"
  floor_s=$(echo "$read_s + $write_s" | bc -l)
  printf "%-5s input %.2f GB -> %.2f GB | read %.2f s, write %.2f s, floor %.2f s | fp4kit %.2f s " \
    "$1" "$(echo "$in_bytes/1000000000" | bc -l)" "$(echo "$out_bytes/1000000000" | bc -l)" "$read_s" \
    "$write_s" "$floor_s" "$fp_s"
  printf "| ratio %.2f | peak RSS %.0f MB\n" "$(echo "$floor_s/$fp_s" | bc -l)" "$(echo "$rss_kb/1024" | bc -l)"
  rm -rf "$out"
}

printf "machine: %s, %s cores; date: %s; size %s\n" "$(lscpu | grep 'Model name' | sed 's/.*: *//')" \
  "$(nproc)" "$(date -u +%F)" "$size"
measure bf16 "$src"
measure fp8 "$fp8"
