#!/usr/bin/env bash
# Checkpoint copy through fp4kit's reader + writer vs cp of the same bytes on the same disk,
# measured in the same run (issue 3 target: >= 80% of cp throughput; peak RSS <= 300 MB + the
# largest tensor).
#   bench/io_copy.sh [BUILD_DIR] [WORKDIR] [GIB] [RUNS]
# Needs bench_io_copy in BUILD_DIR/bench (ninja -C BUILD_DIR bench_io_copy). Both copies end
# durable: cp is followed by sync, fp4kit fsyncs every file and renames OUT.partial -> OUT.
# The page cache is dropped before every copy when permitted (root), else both run warm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
work=${2:-/tmp/fp4kit-iobench}
gib=${3:-4}
runs=${4:-3}
bin=$build/bench/bench_io_copy
[ -x "$bin" ] || { echo "missing $bin: ninja -C $build bench_io_copy" >&2; exit 1; }
src=$work/src
mkdir -p "$work"
if [ ! -f "$src/config.json" ]; then
  rm -rf "$src"
  "$bin" make "$src" "$gib"
fi
bytes=$(du -sb "$src" | cut -f1)
drop() {
  sync
  if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then cache=cold; else cache=warm; fi
}
now() { date +%s.%N; }
echo "source: $src, $bytes bytes, $(ls "$src"/*.safetensors | wc -l) shards"
for run in $(seq 1 "$runs"); do
  rm -rf "$work/cp-out" "$work/fp4kit-out"
  drop
  t0=$(now)
  /usr/bin/time -f "%M" -o "$work/cp.rss" cp -r "$src" "$work/cp-out"
  sync
  t1=$(now)
  cp_s=$(echo "$t1 - $t0" | bc -l)
  rm -rf "$work/cp-out"
  drop
  line=$(/usr/bin/time -f "%M" -o "$work/fp4kit.rss" "$bin" copy "$src" "$work/fp4kit-out")
  fp_s=$(echo "$line" | sed -E 's/.*seconds=([0-9.]+).*/\1/')
  largest=$(echo "$line" | sed -E 's/.*largest_tensor_mib=([0-9.]+).*/\1/')
  rss_mib=$(echo "$(cat "$work/fp4kit.rss") / 1024" | bc -l)
  for f in "$src"/*.safetensors "$src"/*.json; do  # the copy must be byte-identical
    cmp -s "$f" "$work/fp4kit-out/$(basename "$f")" || { echo "copy differs: $f" >&2; exit 1; }
  done
  rm -rf "$work/fp4kit-out"
  printf 'run %d (%s cache): cp+sync %.2f s (%.2f GB/s) | fp4kit %.2f s (%.2f GB/s) | ratio %.2f | peak RSS %.0f MiB (largest tensor %.0f MiB)\n' \
    "$run" "$cache" "$cp_s" "$(echo "$bytes / $cp_s / 1000000000" | bc -l)" "$fp_s" \
    "$(echo "$bytes / $fp_s / 1000000000" | bc -l)" "$(echo "$cp_s / $fp_s" | bc -l)" "$rss_mib" "$largest"
done
