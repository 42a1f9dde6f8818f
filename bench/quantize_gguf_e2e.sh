#!/usr/bin/env bash
# --format gguf against the ModelOpt-format writer on the same checkpoint, in the same run
# (issue 16): ROUNDS (default 3) rounds, each timing `fp4kit quantize --weights-only --verify
# none` to ModelOpt format and then to one GGUF file, the source's page cache evicted before each.
#   [FP4KIT_BUILD=build] bench/quantize_gguf_e2e.sh [WORKDIR] [SIZE: 4gb|small]
# The source is synthetic_source.sh's bf16 Qwen3-MoE checkpoint (4.64 GB), plus the
# stories260K tokenizer.json (a GGUF carries its tokenizer).
set -euo pipefail
source "$(dirname "$0")/synthetic_source.sh"
data=${FP4KIT_SHARED_DATA:-$root/../shared/data}
cp "$data/models/stories260k-llama/tokenizer.json" "$src/"
wall() { grep "Elapsed (wall clock)" "$1" | awk '{print $NF}' |
  awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }'; }
rss() { grep "Maximum resident set size" "$1" | awk '{print int($NF/1024)}'; }
in_bytes=$(cat "$src"/*.safetensors | wc -c)
echo "source: $src, $in_bytes bytes; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| round | ModelOpt format | GGUF | GGUF / ModelOpt time | peak RSS ModelOpt / GGUF |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "${ROUNDS:-3}"); do
  rm -rf "$work/out-a" "$work/out-a.partial" "$work/out.gguf" "$work/out.gguf.partial"
  evict "$src"
  /usr/bin/time -v -o "$work/time-a.txt" "$bin" quantize "$src" "$work/out-a" --weights-only \
    --verify none > "$work/a.log" 2>&1
  evict "$src"
  /usr/bin/time -v -o "$work/time-g.txt" "$bin" quantize "$src" "$work/out.gguf" --format gguf \
    --weights-only --verify none > "$work/g.log" 2>&1
  a=$(wall "$work/time-a.txt"); g=$(wall "$work/time-g.txt")
  echo "| $round | $a s | $g s ($(stat -c %s "$work/out.gguf") B) | $(python3 -c "print(f'{$g/$a:.2f}')") | $(rss "$work/time-a.txt") / $(rss "$work/time-g.txt") MiB |"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
