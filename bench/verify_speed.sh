#!/usr/bin/env bash
# verify --source speed against quantize on the same checkpoint (issue 5: within 2x).
#   bench/verify_speed.sh SRC OUT [FP4KIT_BINARY]
# SRC: a bf16/fp16/fp32 checkpoint. OUT: where fp4kit quantize writes its NVFP4 output (replaced).
# With the page cache of SRC (and OUT) evicted before each step (dd iflag=nocache, no privileges
# needed), times:
#   quantize          fp4kit quantize SRC OUT --weights-only --verify none
#   verify            fp4kit verify OUT                (structural checks only)
#   verify --source   fp4kit verify OUT --source SRC   (every quantized tensor compared)
# and prints each with the ratio verify --source / quantize (target <= 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:?usage: bench/verify_speed.sh SRC OUT [FP4KIT_BINARY]}
out=${2:?usage: bench/verify_speed.sh SRC OUT [FP4KIT_BINARY]}
bin=${3:-$root/build/fp4kit}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

evict() { for f in "$1"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done; }
wall() {  # wall seconds of a command (its output to $work/<name>.log)
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" > "$work/$name.log" 2>&1 || {
    echo "$name failed:"; tail -20 "$work/$name.log"; exit 1; }
  cut -d' ' -f1 "$work/$name.time"
}
rss_mb() { awk '{printf "%.0f", $2/1024}' "$work/$1.time"; }

evict "$src"
rm -rf "$out" "$out.partial"
q=$(wall quantize "$bin" quantize "$src" "$out" --weights-only --verify none)
evict "$src"; evict "$out"
s=$(wall structural "$bin" verify "$out" --quiet)
evict "$src"; evict "$out"
v=$(wall full "$bin" verify "$out" --source "$src" --quiet --report "$work/report.json")

in_bytes=$(cat "$src"/*.safetensors | wc -c)
out_bytes=$(cat "$out"/*.safetensors | wc -c)
python3 - "$in_bytes" "$out_bytes" "$q" "$s" "$v" "$(rss_mb quantize)" "$(rss_mb full)" \
  "$work/report.json" <<'PY'
import datetime, json, os, subprocess, sys
inb, outb = int(sys.argv[1]), int(sys.argv[2])
q, s, v = (float(x) for x in sys.argv[3:6])
rq, rv = sys.argv[6], sys.argv[7]
rep = json.load(open(sys.argv[8]))
cpu = subprocess.run("lscpu | grep 'Model name' | sed 's/.*: *//'", shell=True,
                     capture_output=True, text=True).stdout.strip()
print(f"machine: {cpu}, {os.cpu_count()} cores; date: {datetime.date.today()}")
print(f"source {inb/1e9:.2f} GB -> NVFP4 {outb/1e9:.2f} GB, "
      f"{rep['counts']['modules_quantized']} quantized modules, verify result ok={rep['ok']}")
print(f"quantize          {q:7.2f} s  ({inb/1e9/q:.2f} GB/s of source)  peak RSS {rq} MB")
print(f"verify            {s:7.2f} s")
print(f"verify --source   {v:7.2f} s  ({inb/1e9/v:.2f} GB/s of source)  peak RSS {rv} MB")
print(f"verify --source / quantize = {v/q:.2f} (target <= 2)")
PY
