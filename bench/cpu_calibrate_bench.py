"""The CPU engine against transformers' CPU forward (issue 13): `fp4kit calibrate --device cpu
--threads N` and transformers' float32 forward (torch.set_num_threads(N), no grad, hidden states
only, batches of --batch windows) of the same Qwen3-30B-A3B-shaped bf16 MoE over the same random
token ids, in one run. Default model: the issue's (4 layers, hidden 2048, 32/4 heads of 128,
128 experts of 768, top-8, vocab 151936; 6.2 GB), written here with random N(0, 0.02) bf16
weights (norms 1) by a streaming safetensors writer (seconds, where fp4kit-synth takes minutes).

Usage: python bench/cpu_calibrate_bench.py --fp4kit build/fp4kit [--baseline OLD_FP4KIT]
         [--threads 16] [--layers 4] [--samples 16] [--seq-len 512] [--batch 8]
         [--work /tmp/fp4kit-cpu-bench]
Prints a markdown table, one row per fp4kit build (BENCHMARKS.md, "CPU engine vs transformers").
--baseline: another fp4kit build (e.g. main before a change) run on the same model and tokens in
the same run; the largest relative difference of its statistics (input_amax, input_sumsq) from
--fp4kit's is printed too (different product shapes round differently: float32 rounding only).
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = r'''
import json, sys, time
import numpy as np, torch, transformers
model_dir, ids_path, samples, seq_len, threads, batch = sys.argv[1:7]
samples, seq_len, threads, batch = int(samples), int(seq_len), int(threads), int(batch)
torch.set_num_threads(threads)
t0 = time.perf_counter()
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
load_s = time.perf_counter() - t0
ids = np.fromfile(ids_path, dtype=np.uint32)[: samples * seq_len].astype(np.int64)
windows = torch.tensor(ids.reshape(samples, seq_len))
t1 = time.perf_counter()
with torch.no_grad():
    for i in range(0, samples, batch):
        model.model(windows[i:i + batch])  # hidden states only: calibration needs no logits
print(json.dumps({"load_s": load_s, "forward_s": time.perf_counter() - t1}))
'''


def write_model(path: Path, layers, experts, hidden=2048, heads=32, kv_heads=4, head_dim=128,
                inter=768, top_k=8, vocab=151936):
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
           "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv_heads, "head_dim": head_dim, "vocab_size": vocab,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
           "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "intermediate_size": 3072, "moe_intermediate_size": inter, "num_experts": experts,
           "num_experts_per_tok": top_k, "norm_topk_prob": True, "decoder_sparse_step": 1,
           "mlp_only_layers": [], "attention_bias": False}
    (path / "config.json").write_text(json.dumps(cfg, indent=1))
    t = [("model.embed_tokens.weight", [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", [hidden]),
              (p + "post_attention_layernorm.weight", [hidden]),
              (p + "self_attn.q_proj.weight", [heads * head_dim, hidden]),
              (p + "self_attn.k_proj.weight", [kv_heads * head_dim, hidden]),
              (p + "self_attn.v_proj.weight", [kv_heads * head_dim, hidden]),
              (p + "self_attn.o_proj.weight", [hidden, heads * head_dim]),
              (p + "self_attn.q_norm.weight", [head_dim]),
              (p + "self_attn.k_norm.weight", [head_dim]),
              (p + "mlp.gate.weight", [experts, hidden])]
        for e in range(experts):
            q = f"{p}mlp.experts.{e}."
            t += [(q + "gate_proj.weight", [inter, hidden]), (q + "up_proj.weight", [inter, hidden]),
                  (q + "down_proj.weight", [hidden, inter])]
    t += [("model.norm.weight", [hidden]), ("lm_head.weight", [vocab, hidden])]
    header, off = {}, 0
    for name, shape in t:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    # Random bf16 N(0, 0.02): one pool of values, each tensor a slice at a random offset.
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(1 << 25, dtype=np.float32) * 0.02).view(np.uint32)
    pool = ((pool + 0x7FFF + ((pool >> 16) & 1)) >> 16).astype(np.uint16)
    pool = np.concatenate([pool, pool])
    one = np.full(max(hidden, head_dim), 0x3F80, dtype=np.uint16)  # bf16 1.0
    with open(path / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for name, shape in t:
            n = int(np.prod(shape))
            if len(shape) == 1:
                f.write(one[:n].tobytes())
                continue
            done = 0
            while done < n:
                m = min(n - done, 1 << 25)
                o = int(rng.integers(0, 1 << 25))
                f.write(pool[o:o + m].tobytes())
                done += m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp4kit", required=True)
    ap.add_argument("--baseline", help="another fp4kit build run in the same run")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--work", default="/tmp/fp4kit-cpu-bench")
    a = ap.parse_args()
    work = Path(a.work)
    model = work / f"qwen3moe-{a.layers}l-{a.experts}e"
    if not (model / "model.safetensors").exists():
        t0 = time.perf_counter()
        write_model(model, a.layers, a.experts)
        print(f"model written in {time.perf_counter() - t0:.1f} s", flush=True)
    ids_path = work / "ids.u32"
    np.random.default_rng(1).integers(0, 151936, a.samples * a.seq_len,
                                      dtype=np.uint32).tofile(ids_path)
    tokens = a.samples * a.seq_len

    def run_fp4kit(binary, stats):
        cmd = [binary, "calibrate", str(model), "--data", str(ids_path), "--samples",
               str(a.samples), "--seq-len", str(a.seq_len), "--threads", str(a.threads),
               "--device", "cpu", "-o", str(stats)]
        if stats.exists():
            stats.unlink()
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(p.stdout + p.stderr)
        print(p.stdout, end="", flush=True)
        # FP4KIT_ENGINE_PROFILE=1 in the environment: the engine's time per phase (stderr)
        print("".join(l + "\n" for l in p.stderr.splitlines() if l.startswith("profile:")),
              end="", flush=True)
        fwd = float(re.search(r"time: [\d.]+ s \(([\d.]+) s forward\)", p.stdout).group(1))
        return fwd, wall

    builds = [("fp4kit", a.fp4kit, work / "stats.safetensors")]
    if a.baseline:
        builds.insert(0, ("baseline", a.baseline, work / "stats-baseline.safetensors"))
    results = [(label, *run_fp4kit(b, st)) for label, b, st in builds]
    p = subprocess.run([sys.executable, "-c", CHILD, str(model), str(ids_path), str(a.samples),
                        str(a.seq_len), str(a.threads), str(a.batch)], capture_output=True,
                       text=True)
    if p.returncode != 0:
        sys.exit(p.stdout + p.stderr)
    t = json.loads(p.stdout.strip().splitlines()[-1])
    if a.baseline:
        print("largest relative difference baseline vs fp4kit statistics: "
              + ", ".join(f"{k} {v:.3g}" for k, v in
                          stats_difference(builds[0][2], builds[1][2]).items()))
    print("| model | tokens | threads | build | fp4kit calibrate forward s (tok/s) | fp4kit whole "
          "process s | transformers fp32 forward s (tok/s) | forward speed fp4kit / "
          "transformers |")
    print("|---|---|---|---|---|---|---|---|")
    for label, f_fwd, f_wall in results:
        print(f"| Qwen3-MoE {a.layers} layers, {a.experts} experts | {a.samples} x {a.seq_len} | "
              f"{a.threads} | {label} | {f_fwd:.1f} ({tokens / f_fwd:.0f}) | {f_wall:.1f} | "
              f"{t['forward_s']:.1f} ({tokens / t['forward_s']:.0f}) | "
              f"{t['forward_s'] / f_fwd:.2f} |", flush=True)


def read_safetensors(path):
    """name -> numpy array (F32 / F64 / I64 tensors of a stats file)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    types = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, v in header.items():
        if name == "__metadata__" or v["dtype"] not in types:
            continue
        b, e = v["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=types[v["dtype"]]).reshape(v["shape"])
    return out


def stats_difference(path_a, path_b):
    """Per kind of statistic (the tensor name's last part), the largest |a - b| / max|a| over
    the tensors; the routed token counts must be equal."""
    a, b = read_safetensors(path_a), read_safetensors(path_b)
    if a.keys() != b.keys():
        sys.exit(f"statistics files hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    worst = {}
    for name, x in a.items():
        y = b[name]
        kind = name.rsplit(".", 1)[-1]
        if x.dtype == np.int64:
            if not np.array_equal(x, y):
                sys.exit(f"{name}: routed counts differ between the builds")
            continue
        scale = float(np.max(np.abs(x.astype(np.float64)))) or 1.0
        d = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) / scale
        worst[kind] = max(worst.get(kind, 0.0), d)
    return worst

if __name__ == "__main__":
    main()
