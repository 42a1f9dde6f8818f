"""Calibration speed: `fp4kit calibrate` against a transformers CPU forward (float32, no grad) of
the same model over the same token windows with the same thread count, in the same run; peak RSS
of both (each in its own process: fp4kit holds one layer + activations, transformers the model).

Models: stories260K (shared/data, real weights), a synthetic Qwen3-MoE of about 0.5 B
parameters and a synthetic Qwen3.5-MoE-shaped model (hidden 2048, 3 Gated DeltaNet layers + 1
gated attention layer, experts of 512, top-8, shared expert; random bf16 weights, written to a
temporary directory).
Usage: python bench/calibrate_speed.py --fp4kit build/fp4kit [--threads 2] [--data ../shared/data]
                                       [--only stories260k,qwen3_moe,qwen3_5_moe] [--experts 64]
Prints a markdown table (BENCHMARKS.md, "Calibration").
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r'''
import json, sys, time, resource
import numpy as np, torch, transformers
model_dir, ids_path, samples, seq_len, threads, batch = sys.argv[1:7]
samples, seq_len, threads, batch = int(samples), int(seq_len), int(threads), int(batch)
torch.set_num_threads(threads)
t0 = time.perf_counter()
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
load_s = time.perf_counter() - t0
ids = np.fromfile(ids_path, dtype=np.uint16).astype(np.int64)
windows = torch.tensor(ids[: samples * seq_len].reshape(samples, seq_len))
t1 = time.perf_counter()
with torch.no_grad():
    for i in range(0, samples, batch):
        model.model(windows[i:i + batch])  # hidden states only: calibration needs no logits
fwd_s = time.perf_counter() - t1
print(json.dumps({"load_s": load_s, "forward_s": fwd_s, "tokens": samples * seq_len,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
'''


def run_fp4kit(binary, model_dir, ids, samples, seq_len, threads, out):
    cmd = [binary, "calibrate", str(model_dir), "--data", str(ids), "--samples", str(samples),
           "--seq-len", str(seq_len), "--threads", str(threads), "-o", str(out)]
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M"] + cmd, capture_output=True,
                       text=True, check=True)
    wall = time.perf_counter() - t0
    m = re.search(r"time: ([\d.]+) s \(([\d.]+) s forward\)", p.stdout)
    rss = int(re.search(r"MAXRSS_KB (\d+)", p.stderr).group(1))
    return {"wall_s": wall, "forward_s": float(m.group(2)), "maxrss_kb": rss}


def run_transformers(model_dir, ids, samples, seq_len, threads, batch):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), str(ids), str(samples),
                        str(seq_len), str(threads), str(batch)], capture_output=True, text=True,
                       check=True)
    wall = time.perf_counter() - t0
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["wall_s"] = wall
    return r


def synthetic_moe(path: Path):
    import torch
    import transformers
    cfg = transformers.Qwen3MoeConfig(
        hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=4,
        head_dim=64, vocab_size=32000, num_experts=16, num_experts_per_tok=4,
        moe_intermediate_size=768, intermediate_size=2048, norm_topk_prob=True,
        tie_word_embeddings=False, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    return n


def synthetic_qwen3_5(path: Path, experts: int):
    """Qwen3.5-35B-A3B's layer shapes (hidden 2048, GDN 16/32 heads of 128, attention 16/2 heads
    of 256 with partial RoPE, experts of 512, top-8, shared expert of 512), 4 layers: 3 GDN + 1
    attention."""
    import torch
    import transformers
    cfg = transformers.Qwen3_5MoeTextConfig(
        hidden_size=2048, num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=2,
        head_dim=256, linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, num_experts=experts,
        num_experts_per_tok=8, moe_intermediate_size=512, shared_expert_intermediate_size=512,
        vocab_size=32000, tie_word_embeddings=False, max_position_embeddings=4096,
        layer_types=["linear_attention"] * 3 + ["full_attention"])
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    with torch.no_grad():  # the default init leaves 2-D weights at zero std for some modules
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp4kit", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", default="stories260k,qwen3_moe,qwen3_5_moe")
    ap.add_argument("--experts", type=int, default=64,
                    help="routed experts of the Qwen3.5-shaped model (the real one has 256: "
                         "transformers' float32 copy of 4 such layers needs 13 GB)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    args = ap.parse_args()
    data = Path(args.data)
    ids = data / "text" / "tinystories_val.stories260k.u16"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        only = set(args.only.split(","))
        cases = []
        if "stories260k" in only:
            cases.append(("stories260K (llama, real)", data / "models" / "stories260k-llama", 64,
                          256, 8))
        if "qwen3_moe" in only:
            moe = tmp / "moe-0.5b"
            nparams = synthetic_moe(moe)
            cases.append((f"synthetic Qwen3-MoE {nparams / 1e9:.2f} B (16 experts, top-4)", moe, 8,
                          256, 4))
        if "qwen3_5_moe" in only:
            q35 = tmp / "qwen3_5"
            nparams = synthetic_qwen3_5(q35, args.experts)
            cases.append((f"synthetic Qwen3.5-MoE-shaped {nparams / 1e9:.2f} B (3 GDN + 1 attention, "
                          f"{args.experts} experts of 512, top-8)", q35, 2, 256, 1))
        for name, model_dir, samples, seq_len, batch in cases:
            f = run_fp4kit(args.fp4kit, model_dir, ids, samples, seq_len, args.threads,
                           tmp / "stats.safetensors")
            t = run_transformers(model_dir, ids, samples, seq_len, args.threads, batch)
            tokens = samples * seq_len
            rows.append(f"| {name} | {tokens} | {args.threads} | "
                        f"{tokens / f['forward_s']:.0f} | {tokens / t['forward_s']:.0f} | "
                        f"{tokens / f['wall_s']:.0f} | {tokens / (t['wall_s']):.0f} | "
                        f"{f['maxrss_kb'] / 1024:.0f} | {t['maxrss_kb'] / 1024:.0f} |")
            print(rows[-1], flush=True)
    print("| model | tokens | threads | fp4kit tok/s (forward) | transformers tok/s (forward) | "
          "fp4kit tok/s (whole command) | transformers tok/s (process incl. load) | "
          "fp4kit peak RSS MiB | transformers peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
