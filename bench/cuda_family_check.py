"""Every family on the GPU: the tiny random models of python/tests/tiny_models.py (transformers,
each family fp4kit supports), calibrated and evaluated with `--device cpu` and `--device cuda`
(TF32 default and --gpu-fp32), compared: per-linear amax and sums of squares, routed counts, PPL;
then W4A4 quantize from each stats file: every weight and scale byte-equal, input_scale within 1%.
Besides tiny_models.FAMILIES, the tiny models of the engine's own conformance tests for the
families tiny_models lacks: GLM-4-MoE, OLMoE and DeepSeek-V3 with 16 experts in 4 groups
(test_engine_mla_families.py), Qwen3-Next (test_engine_qwen3_next.py); and quantized sources
(FP8 block-scaled DeepSeek-V3, MXFP4 gpt-oss, NVFP4 Llama) that the GPU decodes itself.

Usage (GPU machine): python3 bench/cuda_family_check.py --bin DIR/bin --tiny python/tests [--work D]
Prints one line per family and check; exits 1 if a check fails.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch


def import_test_module(name):
    """A module of python/tests; pytest, if this machine lacks it, replaced by the few names the
    modules use at import time (only their model builders are called here)."""
    import importlib
    import types
    try:
        import pytest  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pytest")
        stub.importorskip = importlib.import_module

        class Mark:
            def __getattr__(self, _):
                return lambda *a, **k: (lambda f: f)
        stub.mark = Mark()
        stub.fixture = lambda *a, **k: a[0] if a and callable(a[0]) else (lambda f: f)
        stub.param = lambda *a, **k: a
        sys.modules["pytest"] = stub
    return importlib.import_module(name)


def extra_families(tiny_dir, fp4kit):
    """name -> save(path) for the families of the engine tests that tiny_models lacks, and the
    quantized sources the GPU decodes itself: FP8 block-scaled DeepSeek-V3 and MXFP4 gpt-oss
    (make_source_models.py, beside this script) and an NVFP4 Llama (fp4kit's own W4A16 output)."""
    mla = import_test_module("test_engine_mla_families")
    nxt = import_test_module("test_engine_qwen3_next")
    maker = Path(__file__).resolve().parent / "make_source_models.py"

    def source(kind):
        return lambda p: subprocess.run([sys.executable, maker, kind, "tiny", p, "--tiny", tiny_dir],
                                        check=True, capture_output=True)

    def nvfp4_llama(p):
        src = Path(str(p) + ".bf16")
        import tiny_models
        tiny_models.save("llama", src)
        subprocess.run([fp4kit, "quantize", src, p, "--weights-only"], check=True,
                       capture_output=True)

    return {
        "glm4_moe": lambda p: mla.save_tiny_bf16("glm4_moe", p),
        "olmoe": lambda p: mla.save_tiny_bf16("olmoe", p),
        "deepseek_v3_groups": lambda p: mla.save_tiny_bf16("deepseek_v3", p),
        "qwen3_next": lambda p: nxt.build("qwen3_next").save_pretrained(p),
        "deepseek_v3_fp8": source("deepseek_v3_fp8"),
        "gpt_oss_mxfp4": source("gpt_oss_mxfp4"),
        "llama_nvfp4": nvfp4_llama,
    }


def run(cmd, env=None):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    return p


def stats(path):
    t = load_file(str(path))
    amax = {k[: -len(".input_amax")]: float(v.reshape(-1)[0]) for k, v in t.items() if k.endswith(".input_amax")}
    sq = {k[: -len(".input_sq_sum")]: v.astype(np.float64) for k, v in t.items() if k.endswith(".input_sq_sum")}
    routed = {k: int(v.reshape(-1)[0]) for k, v in t.items() if k.endswith(".routed_tokens")}
    return amax, sq, routed


def worst(a, b, skip=()):
    """Worst relative amax and sum-of-squares differences over the linears not under a prefix in
    `skip` (experts whose routed tokens differ: their inputs are other tokens)."""
    keep = [m for m in b[0] if not any(m.startswith(p + ".") for p in skip)]
    ea = max((abs(a[0][m] - b[0][m]) / max(b[0][m], 1e-30) for m in keep), default=0.0)
    es = max((abs(a[1][m].sum() - b[1][m].sum()) / max(b[1][m].sum(), 1e-30) for m in keep
              if m in b[1]), default=0.0)
    return ea, es


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tiny", required=True, help="folder holding tiny_models.py")
    ap.add_argument("--work", default=None)
    ap.add_argument("--families", default="")
    a = ap.parse_args()
    sys.path.insert(0, a.tiny)
    import tiny_models  # noqa: E402
    fp4kit = Path(a.bin) / "fp4kit"
    work = Path(a.work or tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng(0).integers(0, 256, 40000, dtype=np.uint16)
    ids.tofile(work / "ids.u16")
    builders = extra_families(a.tiny, fp4kit)
    fams = a.families.split(",") if a.families else (
        list(tiny_models.FAMILIES) + [f for f in builders if f not in tiny_models.FAMILIES])
    failed = []
    for fam in fams:
        d = work / fam
        if not d.exists():
            if fam in builders and fam not in tiny_models.FAMILIES:
                builders[fam](d)
            else:
                tiny_models.save(fam, d)
        out = {}
        msgs = []
        for dev in ["cpu", "cuda", "cuda-fp32"]:
            extra = ["--device", "cuda", "--gpu-fp32"] if dev == "cuda-fp32" else ["--device", dev]
            p = run([fp4kit, "calibrate", d, "--data", work / "ids.u16", "--samples", "8", "--seq-len",
                     "128", "-o", work / f"{fam}.{dev}.stats"] + extra)
            if p.returncode != 0:
                msgs.append(f"calibrate {dev}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
                continue
            out[dev] = stats(work / f"{fam}.{dev}.stats")
        if "cpu" not in out:
            print(f"{fam}: CPU engine refuses it ({'; '.join(msgs)}) - not compared")
            continue
        for dev, tol in [("cuda-fp32", 1e-3), ("cuda", 1e-2)]:
            if dev not in out:
                failed.append(f"{fam} {dev}")
                print(f"{fam}: {dev} FAILED: {'; '.join(msgs)}")
                continue
            # Routes: float32 products must route every token as the CPU engine does. Under TF32
            # the router itself (and attention) runs in float32, but its input comes through TF32
            # linears (relative error ~1e-4), so a near-tie between two experts' logits may flip:
            # at most 0.1% of the routes may move to another expert, and the experts whose routed
            # counts differ are left out of the statistics comparison (their inputs are other
            # tokens; how many is printed).
            cpu_r, dev_r = out["cpu"][2], out[dev][2]
            moved_experts = [e[: -len(".routed_tokens")] for e, n in cpu_r.items() if dev_r.get(e) != n]
            ea, es = worst(out[dev], out["cpu"], moved_experts)
            routes = sum(cpu_r.values())
            moved = sum(abs(dev_r.get(e, 0) - n) for e, n in cpu_r.items()) // 2
            routes_ok = set(cpu_r) == set(dev_r) and (moved == 0 if dev == "cuda-fp32"
                                                      else moved <= 0.001 * routes)
            ok = ea < tol and es < tol and set(out[dev][0]) == set(out["cpu"][0]) and routes_ok
            print(f"{fam}: calibrate {dev} vs cpu: {len(out['cpu'][0])} linears, worst amax {ea:.2e}, "
                  f"worst sum of squares {es:.2e}, routed counts "
                  f"{'equal' if moved == 0 else f'differ ({moved} of {routes} routes moved; {len(moved_experts)} experts left out)'}"
                  f" -> {'ok' if ok else 'FAILED'} (tolerance {tol})")
            if not ok:
                failed.append(f"{fam} {dev}")
        # eval: PPL on both devices
        ppl = {}
        for dev in ["cpu", "cuda"]:
            p = run([fp4kit, "eval", d, "--data", work / "ids.u16", "--ctx", "128", "--chunks", "8",
                     "--json", "--device", dev])
            if p.returncode == 0:
                ppl[dev] = json.loads(p.stdout)["ppl"]
            else:
                print(f"{fam}: eval {dev}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        if len(ppl) == 2:
            rel = abs(ppl["cuda"]["value"] - ppl["cpu"]["value"]) / ppl["cpu"]["value"]
            ok = rel < 1e-3 and abs(ppl["cuda"]["value"] - ppl["cpu"]["value"]) < ppl["cpu"]["uncertainty"]
            print(f"{fam}: eval PPL cpu {ppl['cpu']['value']:.4f} +/- {ppl['cpu']['uncertainty']:.4f}, "
                  f"cuda {ppl['cuda']['value']:.4f} (rel {rel:.1e}) -> {'ok' if ok else 'FAILED'}")
            if not ok:
                failed.append(f"{fam} eval")
        # W4A4 from each stats file
        if "cuda" in out:
            q = {}
            for dev in ["cpu", "cuda"]:
                qd = work / f"{fam}.q.{dev}"
                run(["rm", "-rf", qd])
                p = run([fp4kit, "quantize", d, qd, "--stats", work / f"{fam}.{dev}.stats"])
                if p.returncode != 0:
                    # An NVFP4 source has no W4A4 output: fp4kit refuses it up front (it does
                    # not re-quantize NVFP4 codes). Any other failure fails the check.
                    refused = fam.endswith("_nvfp4") and "already an NVFP4 checkpoint" in p.stderr
                    print(f"{fam}: quantize {dev}: exit {p.returncode}: {p.stderr.strip()[-300:]}"
                          f" -> {'ok (refused as it must be)' if refused else 'FAILED'}")
                    if not refused:
                        failed.append(f"{fam} quantize {dev}")
                    break
                t = {}
                for f in sorted(qd.glob("*.safetensors")):
                    for n, v in load_torch(str(f)).items():  # bytes of any dtype (bf16 too)
                        t[n] = (v.contiguous().view(-1).view(torch.uint8).numpy().tobytes(),
                                float(v.float().reshape(-1)[0]) if v.numel() == 1 else 0.0)
                q[dev] = t
            if len(q) == 2:
                names = sorted(q["cpu"])
                scales = [n for n in names if n.endswith("input_scale")]
                others = [n for n in names if not n.endswith("input_scale")]
                diff_bytes = [n for n in others if q["cpu"][n][0] != q["cuda"].get(n, (b"", 0))[0]]
                worst_is = max((abs(q["cuda"][n][1] / q["cpu"][n][1] - 1) for n in scales),
                               default=0.0)
                ok = not diff_bytes and worst_is < 0.01 and set(q["cpu"]) == set(q["cuda"])
                print(f"{fam}: W4A4 from cuda stats vs cpu stats: {len(others)} tensors byte-equal "
                      f"{len(others) - len(diff_bytes)}/{len(others)}, {len(scales)} input_scale within "
                      f"{worst_is:.2e} -> {'ok' if ok else 'FAILED'}")
                if not ok:
                    failed.append(f"{fam} W4A4")
    print("FAILED: " + ", ".join(failed) if failed else "all families: ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
