#!/usr/bin/env bash
# End-to-end quantize throughput against the I/O floor, measured in the same run (issue 4).
#   bench/quantize_e2e.sh [WORKDIR] [SIZE: 4gb|small]
# Builds a synthetic bf16 Qwen3-MoE checkpoint (~4 GB), then times, with the page cache of the
# input evicted before each (dd iflag=nocache, no privileges needed):
#   read floor : cat of every input shard to /dev/null
#   write floor: writing as many bytes as fp4kit's output to the same disk (dd, fsync)
#   fp4kit     : fp4kit quantize --weights-only (peak RSS from /usr/bin/time)
# and prints throughput of each as GB/s of input and the ratio fp4kit / (read + write floor).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/fp4kit-bench}
size=${2:-4gb}
bin=$root/build/fp4kit
synth=$root/build/fp4kit-synth
mkdir -p "$work"
src=$work/src-$size
if [ ! -f "$src/config.json" ]; then
  rm -rf "$src"
  if [ "$size" = 4gb ]; then
    # 7 layers x 64 experts x 3 x 2048 x 768 bf16 + attention + embeddings ~ 4.3 GB
    "$synth" "$src" --layers 7 --hidden 2048 --heads 16 --kv-heads 4 --head-dim 128 \
      --experts 64 --moe-intermediate 768 --vocab 32000 --shard-gb 2
  else
    "$synth" "$src" --layers 2 --hidden 512 --heads 8 --kv-heads 2 --head-dim 64 \
      --experts 16 --moe-intermediate 256 --vocab 4096
  fi
fi
evict() { for f in "$1"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done; }
now() { date +%s.%N; }
in_bytes=$(du -cb "$src"/*.safetensors | tail -1 | cut -f1)

evict "$src"
t0=$(now); cat "$src"/*.safetensors > /dev/null; t1=$(now)
read_s=$(echo "$t1 - $t0" | bc -l)

out=$work/out-$size
rm -rf "$out" "$out.partial"
evict "$src"
/usr/bin/time -v -o "$work/time.txt" "$bin" quantize "$src" "$out" --weights-only --verify none \
  > "$work/quantize.log" 2>&1
fp_s=$(grep "Elapsed (wall clock)" "$work/time.txt" | awk '{print $NF}' |
  awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
rss_kb=$(grep "Maximum resident set size" "$work/time.txt" | awk '{print $NF}')
out_bytes=$(du -cb "$out"/*.safetensors | tail -1 | cut -f1)
largest=$(python3 - "$src" <<'PY'
import json, struct, sys, glob
m = 0
for f in glob.glob(sys.argv[1] + "/*.safetensors"):
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        h = json.loads(fh.read(n))
    for k, v in h.items():
        if k != "__metadata__":
            m = max(m, v["data_offsets"][1] - v["data_offsets"][0])
print(m)
PY
)

t0=$(now); dd if=/dev/zero of="$work/write-floor.bin" bs=16M count=$((out_bytes / 16777216 + 1)) \
  conv=fsync status=none; t1=$(now)
write_s=$(echo "$t1 - $t0" | bc -l)
rm -f "$work/write-floor.bin"

floor_s=$(echo "$read_s + $write_s" | bc -l)
printf "machine: %s, %s cores; date: %s\n" "$(lscpu | grep 'Model name' | sed 's/.*: *//')" "$(nproc)" "$(date -u +%F)"
printf "input %.2f GB bf16 -> output %.2f GB; largest tensor %.1f MB\n" \
  "$(echo "$in_bytes/1e9" | bc -l)" "$(echo "$out_bytes/1e9" | bc -l)" "$(echo "$largest/1e6" | bc -l)"
printf "read floor   %6.2f s  (%.2f GB/s)\n" "$read_s" "$(echo "$in_bytes/1e9/$read_s" | bc -l)"
printf "write floor  %6.2f s  (%.2f GB/s of output)\n" "$write_s" "$(echo "$out_bytes/1e9/$write_s" | bc -l)"
printf "I/O floor    %6.2f s  (%.2f GB/s of input)\n" "$floor_s" "$(echo "$in_bytes/1e9/$floor_s" | bc -l)"
printf "fp4kit       %6.2f s  (%.2f GB/s of input)\n" "$fp_s" "$(echo "$in_bytes/1e9/$fp_s" | bc -l)"
printf "fp4kit throughput / I/O floor throughput = %.2f (target >= 0.70)\n" "$(echo "$floor_s/$fp_s" | bc -l)"
printf "peak RSS %.0f MB; bound 1 GB + 2 x largest tensor = %.0f MB\n" \
  "$(echo "$rss_kb/1024" | bc -l)" "$(echo "(1e9 + 2*$largest)/1048576" | bc -l)"
