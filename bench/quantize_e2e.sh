#!/usr/bin/env bash
# End-to-end quantize throughput against the I/O floor, measured in the same run (issue 4).
#   [FP4KIT_BUILD=build] bench/quantize_e2e.sh [WORKDIR] [SIZE: 4gb|small]
# Builds a synthetic bf16 Qwen3-MoE checkpoint (~4 GB), then times, with the page cache of the
# input evicted before each (dd iflag=nocache, no privileges needed):
#   read floor : cat of every input shard to /dev/null
#   write floor: writing as many bytes as fp4kit's output to the same disk (dd, fsync)
#   fp4kit     : fp4kit quantize --weights-only (peak RSS from /usr/bin/time)
# and prints throughput of each as GB/s of input and the ratio fp4kit / (read + write floor).
set -euo pipefail
source "$(dirname "$0")/synthetic_source.sh"
now() { date +%s.%N; }
in_bytes=$(cat "$src"/*.safetensors | wc -c)

evict "$src"
t0=$(now); cat "$src"/*.safetensors > /dev/null; t1=$(now)
read_s=$(python3 -c "print($t1 - $t0)")

out=$work/out-$size
rm -rf "$out" "$out.partial"
evict "$src"
/usr/bin/time -v -o "$work/time.txt" "$bin" quantize "$src" "$out" --weights-only --verify none \
  > "$work/quantize.log" 2>&1
fp_s=$(grep "Elapsed (wall clock)" "$work/time.txt" | awk '{print $NF}' |
  awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
rss_kb=$(grep "Maximum resident set size" "$work/time.txt" | awk '{print $NF}')
out_bytes=$(cat "$out"/*.safetensors | wc -c)
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
write_s=$(python3 -c "print($t1 - $t0)")
rm -f "$work/write-floor.bin"

python3 - "$in_bytes" "$out_bytes" "$largest" "$read_s" "$write_s" "$fp_s" "$rss_kb" <<'PY'
import sys, subprocess, datetime, os
inb, outb, largest = (int(x) for x in sys.argv[1:4])
read_s, write_s, fp_s = (float(x) for x in sys.argv[4:7])
rss_mb = int(sys.argv[7]) / 1024
cpu = subprocess.run("lscpu | grep 'Model name' | sed 's/.*: *//'", shell=True,
                     capture_output=True, text=True).stdout.strip()
floor_s = read_s + write_s
print(f"machine: {cpu}, {os.cpu_count()} cores; date: {datetime.date.today()}")
print(f"input {inb/1e9:.2f} GB bf16 -> output {outb/1e9:.2f} GB; largest tensor {largest/1e6:.1f} MB")
print(f"read floor   {read_s:7.2f} s  ({inb/1e9/read_s:.2f} GB/s)")
print(f"write floor  {write_s:7.2f} s  ({outb/1e9/write_s:.2f} GB/s of output)")
print(f"I/O floor    {floor_s:7.2f} s  ({inb/1e9/floor_s:.2f} GB/s of input)")
print(f"fp4kit       {fp_s:7.2f} s  ({inb/1e9/fp_s:.2f} GB/s of input)")
print(f"fp4kit throughput / I/O floor throughput = {floor_s/fp_s:.2f} (target >= 0.70)")
print(f"peak RSS {rss_mb:.0f} MB; bound 1 GB + 2 x largest tensor = {(1e9 + 2*largest)/2**20:.0f} MB")
PY
