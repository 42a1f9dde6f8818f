#!/usr/bin/env bash
# Weight-only quantize against the I/O floor in one run, page cache WARM (issue 14's setting:
# the source was just written or read): per run, `cat` of the source shards to /dev/null (read
# floor), `dd` of as many bytes as fp4kit writes, fsynced (write floor), then fp4kit quantize
# --weights-only with the default (structural) verify and with --verify none, and the same
# default command of an OLD binary (e.g. main before a change) when given, in the same run. Every
# timed step starts after a `sync` (untimed), so none pays for another's dirty pages. Once, before
# the runs: the write floor with 4 parallel `dd`s (a quarter of the bytes each, fsynced). After
# the runs: the old and new outputs compared byte for byte. The model: bench/make_bench_model.py
# (GPU machine) or fp4kit-synth with the same shape.
#   bench/weight_only_many_cores.sh FP4KIT SRC WORK [RUNS] [OLD_FP4KIT]
set -euo pipefail
bin=$1; src=$2; work=$3; runs=${4:-3}; old=${5:-}
mkdir -p "$work"
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
cat "$src"/*.safetensors > /dev/null
echo "cores: $(nproc); input: $(cat "$src"/*.safetensors | wc -c) bytes; work dir on: $(df -T "$work" | tail -1 | awk '{print $1, $2}')"
# Output size (and a warm-up of the binary and libraries).
rm -rf "$work/o1"
"$bin" quantize "$src" "$work/o1" --weights-only --verify none > "$work/log1" 2>&1
out_bytes=$(cat "$work/o1"/*.safetensors | wc -c)
blocks=$(( (out_bytes + 16777215) / 16777216 ))
rm -rf "$work/o1"; sync
t0=$(now)
for i in 0 1 2 3; do
  dd if=/dev/zero of="$work/dd$i" bs=16M count=$(( (blocks + 3) / 4 )) conv=fsync status=none &
done
wait; t1=$(now); rm -f "$work"/dd?
echo "output: $out_bytes bytes; 4 parallel dd + fsync of a quarter each: $(secs $t0 $t1) s"
hdr="| run | cat (read floor) | dd+fsync (write floor) | read+write |"
sep="|---|---|---|---|"
[ -n "$old" ] && { hdr="$hdr old default |"; sep="$sep---|"; }
echo "$hdr fp4kit --verify none | fp4kit default (structural) | default / (read+write) |"
echo "$sep---|---|---|"
for r in $(seq 1 "$runs"); do
  sync; t0=$(now); cat "$src"/*.safetensors > /dev/null; t1=$(now)
  sync; t2=$(now); dd if=/dev/zero of="$work/dd" bs=16M count=$blocks conv=fsync status=none
  t3=$(now); rm -f "$work/dd"
  row="| $r | $(secs $t0 $t1) s | $(secs $t2 $t3) s | $(python3 -c "print(f'{$t1-$t0+$t3-$t2:.2f}')") s |"
  if [ -n "$old" ]; then
    rm -rf "$work/o3"; sync
    t8=$(now); "$old" quantize "$src" "$work/o3" --weights-only > "$work/log3" 2>&1; t9=$(now)
    row="$row $(secs $t8 $t9) s |"
  fi
  rm -rf "$work/o1"; sync
  t6=$(now); "$bin" quantize "$src" "$work/o1" --weights-only --verify none > "$work/log1" 2>&1
  t7=$(now)
  rm -rf "$work/o2"; sync
  t4=$(now); "$bin" quantize "$src" "$work/o2" --weights-only > "$work/log2" 2>&1; t5=$(now)
  echo "$row $(secs $t6 $t7) s | $(secs $t4 $t5) s | $(python3 -c "print(f'{($t5-$t4)/($t1-$t0+$t3-$t2):.2f}')") |"
done
rm -rf "$work/o2"; sync
/usr/bin/time -f "%e s, %U s user, %S s system, peak RSS %M KB" -o "$work/t2" "$bin" quantize \
  "$src" "$work/o2" --weights-only > "$work/log2" 2>&1
echo "fp4kit default once more under /usr/bin/time: $(cat "$work/t2")"
tail -4 "$work/log2"
if [ -n "$old" ]; then
  if diff -rq "$work/o2" "$work/o3" > /dev/null; then
    echo "old and new outputs: identical bytes"
  else
    echo "old and new outputs: DIFFER"
  fi
fi
