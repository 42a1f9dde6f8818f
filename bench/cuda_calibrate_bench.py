"""`fp4kit calibrate --device cuda` on the issue's model: a 4-layer Qwen3-30B-A3B-shaped bf16 MoE
(hidden 2048, 32/4 heads of 128, 128 experts of 768, top-8, vocab 151936; 6.2 GB, written by
fp4kit-synth), 64 x 512 random token ids. Whole process wall time (page cache cold = first run after
writing, then warm), against transformers' bf16 forward of the same model and tokens on the same GPU
(weights resident; first and second pass), in the same run. Then `quantize --stats` of the result.

Usage (on the GPU machine): python3 bench/cuda_calibrate_bench.py --bin DIR/bin --work /tmp/b
Prints a markdown table (BENCHMARKS.md, "Calibration on the GPU"). --no-prefetch-run adds a run
with FP4KIT_CUDA_PREFETCH=0 (the cross-layer prefetch off) in the same process. The 1M-token
bench of the issue: --samples 512 --seq-len 2048 --runs 1 --skip-quantize --batch 8.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHAPE = dict(layers=4, hidden=2048, heads=32, kv_heads=4, head_dim=128, experts=128, top_k=8,
             moe_intermediate=768, vocab=151936)


def sh(cmd, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stdout.write(p.stdout + p.stderr)
        raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}")
    return p, wall


def transformers_forward(model_dir, ids, samples, seq_len, batch, passes):
    import torch
    import transformers
    torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                              device_map="cuda").eval()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    windows = torch.tensor(ids[: samples * seq_len].reshape(samples, seq_len).astype(np.int64),
                           device="cuda")
    times = []
    with torch.no_grad():
        for _ in range(passes):
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            for i in range(0, samples, batch):
                model.model(windows[i:i + batch])  # hidden states: calibration needs no logits
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t1)
    return {"load_s": load_s, "forward_s": times}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", default="/tmp/fp4kit-cuda-bench")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--synth", choices=["torch", "fp4kit"], default="torch")
    ap.add_argument("--runs", type=int, default=3, help="calibrate runs (the first right after "
                    "writing the model when it is new)")
    ap.add_argument("--skip-quantize", action="store_true")
    ap.add_argument("--no-prefetch-run", action="store_true")
    ap.add_argument("--passes", type=int, default=3, help="transformers forward passes")

    a = ap.parse_args()
    b = Path(a.bin)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model = work / "qwen3moe-4l"
    if not model.exists():
        if a.synth == "torch":  # same names, shapes, scales and config; drawn on the GPU
            _, synth_s = sh([sys.executable, str(Path(__file__).with_name("make_bench_model.py")),
                             str(model)])
        else:
            args = [str(b / "fp4kit-synth"), str(model)]
            for k, v in SHAPE.items():
                args += [f"--{k.replace('_', '-')}", str(v)]
            _, synth_s = sh(args)
        print(f"model written in {synth_s:.1f} s ({a.synth})")
    ids = np.random.default_rng(0).integers(0, SHAPE["vocab"], 2 * a.samples * a.seq_len,
                                            dtype=np.uint32)
    ids_path = work / "ids.u32"
    ids.tofile(ids_path)
    tokens = a.samples * a.seq_len
    rows = []
    calib = [str(b / "fp4kit"), "calibrate", str(model), "--data", str(ids_path), "--samples",
             str(a.samples), "--seq-len", str(a.seq_len), "--device", "cuda"]
    labels = ["first run (page cache as the model writer left it)"] + ["page cache warm"] * (a.runs - 1)
    if a.no_prefetch_run:
        labels.append("page cache warm, FP4KIT_CUDA_PREFETCH=0 (prefetch off)")
    for label in labels:
        env = dict(os.environ, FP4KIT_CUDA_PREFETCH="0" if "PREFETCH=0" in label else "1")
        p, wall = sh(["/usr/bin/time", "-f", "MAXRSS_KB %M"] + calib +
                     ["-o", str(work / "s.safetensors")], env=env)
        m = re.search(r"time: ([\d.]+) s \(([\d.]+) s forward\)", p.stdout)
        rss = int(re.search(r"MAXRSS_KB (\d+)", p.stderr).group(1))
        rows.append((f"fp4kit calibrate --device cuda, whole process ({label})", wall,
                     float(m.group(2)), rss))
        if len(rows) == 1:
            print(p.stdout)
    qwall = None
    if not a.skip_quantize:
        subprocess.run(["rm", "-rf", str(work / "q")])
        _, qwall = sh([str(b / "fp4kit"), "quantize", str(model), str(work / "q"), "--stats",
                       str(work / "s.safetensors")])
    result = {"rows": rows, "quantize_s": qwall}
    if not a.skip_transformers:
        result["transformers"] = transformers_forward(str(model), ids, a.samples, a.seq_len, a.batch,
                                                      a.passes)
    print(json.dumps(result, indent=1))
    print(f"\n| {a.samples} x {a.seq_len} = {tokens} tokens | wall s | forward s | tokens/s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for label, wall, fwd, rss in rows:
        print(f"| {label} | {wall:.2f} | {fwd:.2f} | {tokens / fwd:.0f} | {rss / 1024:.0f} |")
    if qwall is not None:
        print(f"| fp4kit quantize --stats (W4A4, CPU), whole process | {qwall:.2f} | | | |")
        best = min(r[1] for r in rows if "PREFETCH=0" not in r[0])
        print(f"| calibrate (fastest prefetch run) + quantize --stats | {best + qwall:.2f} | | | |")
    if "transformers" in result:
        t = result["transformers"]
        for i, f in enumerate(t["forward_s"]):
            print(f"| transformers bf16 forward on the GPU, pass {i + 1} (weights resident; load "
                  f"{t['load_s']:.1f} s) | | {f:.2f} | {tokens / f:.0f} | |")


if __name__ == "__main__":
    main()
