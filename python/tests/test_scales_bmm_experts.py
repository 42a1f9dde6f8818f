"""--scales hessian on gpt-oss's 3-D BMM experts: `calibrate --hessian` keeps each expert's own
16x16 Hessian blocks and token count (bmm_expert_stats_name: experts.<e>.gate_up_proj), besides the
tensor's shared statistics, and `quantize --scales hessian` searches each expert with its own H.

Checked on the tiny gpt-oss (4 experts, top-2, real routing): the per-expert token counts and
Hessian blocks add up to the 3-D tensor's (every routed token reaches exactly the experts it was
sent to; float64 sums in another order: 1e-12 relative); the report says `hessian` with no
fall-back for the BMM tensors; and per expert the layer-output error tr(dW H dW^T), recomputed in
float64 from the dequantized 3-D output with the expert's own H, is never above --scales max's and
below it for most experts. With --hessian-min-tokens above every expert's count, every expert
uses mse and the report says how many and why.
"""
import json

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch

import tiny_models
from conftest import fp4kit_bin, require_executable, run_checked

E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float64)


def dequantize_bmm(out: dict, m: str) -> np.ndarray:
    """[E, N, K] float64 from fp4kit's / ModelOpt's 3-D layout: U8 [E, K/2, N], F8 [E, K/16, N]."""
    packed = out[m].numpy().transpose(0, 2, 1)                      # [E, N, K/2]
    scales = out[m + "_weight_scale"].float().numpy().transpose(0, 2, 1)  # [E, N, K/16]
    s2 = float(out[m + "_weight_scale_2"].reshape(-1)[0])
    codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(*packed.shape[:2], -1)
    return E2M1[codes] * np.repeat(scales.astype(np.float64), 16, axis=2) * s2


def layer_error(w: np.ndarray, dq: np.ndarray, h: np.ndarray) -> float:
    """tr(dW H dW^T) for dW [N, K] and block-diagonal H given as [K/16, 16, 16]."""
    dw = (w - dq).reshape(w.shape[0], -1, 16)
    return float(np.einsum("nja,jab,njb->", dw, h, dw))


def test_bmm_experts_searched_with_their_own_hessian(tmp_path):
    fp4kit = require_executable(fp4kit_bin())
    src = tiny_models.save("gpt_oss", tmp_path / "src")
    ids = tmp_path / "ids.u32"
    torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(7)).numpy() \
        .astype("<u4").tofile(ids)
    stats = tmp_path / "stats.safetensors"
    run_checked([fp4kit, "calibrate", src, "--data", ids, "--samples", 4, "--seq-len", 32,
                 "--hessian", "raw", "-o", stats])

    def quantize(name, *extra):
        run_checked([fp4kit, "quantize", src, tmp_path / name, "--weights-only", "--verify", "none",
                     "--report", tmp_path / f"{name}.json", *extra])
        out = {}
        for f in sorted((tmp_path / name).glob("*.safetensors")):
            out.update(load_torch(f))
        return out, json.loads((tmp_path / f"{name}.json").read_text())

    q_max, _ = quantize("max")
    q_h, rep = quantize("hess", "--scales", "hessian", "--stats", stats, "--hessian-min-tokens", 1)
    _, rep_few = quantize("few", "--scales", "hessian", "--stats", stats,
                          "--hessian-min-tokens", 100000)
    st = load_file(stats)
    source = load_torch(next((tmp_path / "src").glob("*.safetensors")))

    compared = better = 0
    for layer in range(2):
        for proj in ("gate_up_proj", "down_proj"):
            m = f"model.layers.{layer}.mlp.experts.{proj}"
            t = next(x for x in rep["tensors"] if x["name"] == m)
            assert t["block_scales"] == "hessian" and not t.get("block_scales_fallback"), t
            few = next(x for x in rep_few["tensors"] if x["name"] == m)
            assert few["block_scales"] == "mse", few
            assert few["block_scales_fallback"].startswith("4 of 4 experts: too few calibration"), few
            counts = [int(st[f"model.layers.{layer}.mlp.experts.{e}.{proj}.token_count"].reshape(-1)[0])
                      for e in range(4)]
            assert sum(counts) == int(st[f"{m}.token_count"].reshape(-1)[0]), (m, counts)
            assert min(counts) > 0, counts
            hs = [st[f"model.layers.{layer}.mlp.experts.{e}.{proj}.input_hessian_blocks"]
                  for e in range(4)]
            np.testing.assert_allclose(sum(hs), st[f"{m}.input_hessian_blocks"], rtol=1e-12)
            w = source[m].double().numpy().transpose(0, 2, 1)  # [E, K, N] -> [E, N, K]
            dq_max, dq_h = dequantize_bmm(q_max, m), dequantize_bmm(q_h, m)
            for e in range(4):
                h = hs[e].reshape(-1, 16, 16) / counts[e]
                e_max = layer_error(w[e], dq_max[e], h)
                e_h = layer_error(w[e], dq_h[e], h)
                assert e_h <= e_max * (1 + 1e-6), (m, e, e_h, e_max)
                compared += 1
                better += e_h < 0.95 * e_max
    assert compared == 16 and better >= 12, (compared, better)
