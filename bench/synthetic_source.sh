# Sourced by the bench scripts that time fp4kit on the synthetic bf16 Qwen3-MoE checkpoint
# (usage of each: [FP4KIT_BUILD=build] bench/SCRIPT.sh [WORKDIR] [SIZE: 4gb|small]). Sets root,
# work, size, bindir, bin and src (the checkpoint, built with fp4kit-synth when missing), and
# defines evict DIR: drops DIR's shards from the page cache (dd iflag=nocache, no privileges).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${1:-/tmp/fp4kit-bench}
size=${2:-4gb}
bindir=${FP4KIT_BUILD:-$root/build}
bin=$bindir/fp4kit
src=$work/src-$size
mkdir -p "$work"
if [ ! -f "$src/config.json" ]; then
  rm -rf "$src"
  if [ "$size" = 4gb ]; then
    # 7 layers x 64 experts x 3 x 2048 x 768 bf16 + attention + embeddings: 4.64 GB
    "$bindir/fp4kit-synth" "$src" --layers 7 --hidden 2048 --heads 16 --kv-heads 4 --head-dim 128 \
      --experts 64 --moe-intermediate 768 --vocab 32000 --shard-gb 2
  else
    "$bindir/fp4kit-synth" "$src" --layers 2 --hidden 512 --heads 8 --kv-heads 2 --head-dim 64 \
      --experts 16 --moe-intermediate 256 --vocab 4096
  fi
fi
evict() { for f in "$1"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done; }
