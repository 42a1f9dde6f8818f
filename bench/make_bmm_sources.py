"""Synthetic sources for bench/quantize_bmm_e2e.sh: the same expert parameters in three layouts.
  bmm/    gpt-oss BF16 BMM experts   experts.gate_up_proj [E, H, 2I], experts.down_proj [E, I, H]
  mxfp4/  gpt-oss MXFP4 experts      *_blocks [E, N, K/32, 16] + *_scales [E, N, K/32]
  fused/  Qwen3.5-style fused 3-D    experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I]
          (fp4kit splits these into 2-D per-expert entries: the reference path, no transposes)
Usage: python3 make_bmm_sources.py OUTDIR LAYERS EXPERTS HIDDEN INTER"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

out, layers, E, H, I = Path(sys.argv[1]), *map(int, sys.argv[2:6])
g = torch.Generator().manual_seed(0)
for kind in ("bmm", "mxfp4", "fused"):
    d = out / kind
    if (d / "config.json").exists():
        continue
    d.mkdir(parents=True, exist_ok=True)
    for layer in range(layers):
        p = f"model.layers.{layer}.mlp."
        t = {}
        if kind == "mxfp4":
            for name, n, k in (("gate_up_proj", 2 * I, H), ("down_proj", H, I)):
                t[f"{p}experts.{name}_blocks"] = torch.randint(0, 256, (E, n, k // 32, 16),
                                                               generator=g, dtype=torch.uint8)
                t[f"{p}experts.{name}_scales"] = torch.randint(118, 122, (E, n, k // 32),
                                                               generator=g, dtype=torch.uint8)
        else:
            gu = (E, H, 2 * I) if kind == "bmm" else (E, 2 * I, H)
            dn = (E, I, H) if kind == "bmm" else (E, H, I)
            t[p + "experts.gate_up_proj"] = (torch.randn(gu, generator=g) * 0.02).bfloat16()
            t[p + "experts.down_proj"] = (torch.randn(dn, generator=g) * 0.02).bfloat16()
        router = p + ("router.weight" if kind != "fused" else "gate.weight")
        t[router] = (torch.randn(E, H, generator=g) * 0.02).bfloat16()
        save_file(t, d / f"model-{layer:05d}.safetensors", metadata={"format": "pt"})
    files = sorted(x.name for x in d.glob("model-*.safetensors"))
    from safetensors import safe_open
    weight_map = {}
    for f in files:
        with safe_open(d / f, "pt") as s:
            weight_map.update({k: f for k in s.keys()})
    json.dump({"metadata": {}, "weight_map": weight_map},
              open(d / "model.safetensors.index.json", "w"))
    if kind == "fused":
        cfg = {"architectures": ["Qwen3_5MoeForCausalLM"], "model_type": "qwen3_5_moe_text",
               "hidden_size": H, "moe_intermediate_size": I, "num_experts": E}
    else:
        cfg = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": H,
               "intermediate_size": I, "num_local_experts": E}
        if kind == "mxfp4":
            cfg["quantization_config"] = {"quant_method": "mxfp4"}
    cfg["num_hidden_layers"] = layers
    json.dump(cfg, open(d / "config.json", "w"))
    print(f"{kind}: written")
