"""fp4kit calibrate's input amax of routed experts against ModelOpt's calibrated amax.

ModelOpt 0.47 registers transformers 5's fused MoE experts with one input quantizer per projection
(gate_up, down) for all experts of a layer, so its calibrated amax is a per-layer value: the max
over every token routed to any expert. fp4kit records each expert separately; the max over a layer's
experts must agree with ModelOpt's value within 1% (ModelOpt computes in bf16, fp4kit in float32:
NVFP4-SPEC.md section 2 expects about 1%). Dense linears are compared one to one. Same token ids for
both (4 windows of 32 tokens, batch of 4 in ModelOpt, no padding).
"""
import collections
import re
import subprocess

import pytest
import torch
from safetensors.numpy import load_file

import tiny_models
from conftest import fp4kit_bin, require_executable
from test_quantize_modelopt import CALIB_IDS, modelopt_input_amax


def group_key(module: str) -> str:
    """ModelOpt's fused-expert amax is shared by all experts (and by gate and up) of a layer."""
    if ".experts." not in module:
        return module
    key = re.sub(r"experts\.\d+\.", "experts.*.", module)
    return re.sub(r"\.(gate_proj|up_proj|w1|w3)$", ".gate_up", key)


@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral"])
def test_expert_and_dense_input_amax_within_1_percent_of_modelopt(family, tmp_path):
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForCausalLM

    src = tiny_models.save(family, tmp_path / "src")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        model = mtq.quantize(model, mtq.NVFP4_DEFAULT_CFG, lambda m: m(CALIB_IDS))
    theirs = modelopt_input_amax(model, family)
    assert any(".experts." in m for m in theirs), "ModelOpt calibrated no expert"

    ids = tmp_path / "ids.u32"
    CALIB_IDS.numpy().astype("<u4").tofile(ids)  # the 4 x 32 windows, back to back
    stats = tmp_path / "stats.safetensors"
    proc = subprocess.run([str(require_executable(fp4kit_bin())), "calibrate", str(src), "--data",
                           str(ids), "--samples", "4", "--seq-len", "32", "-o", str(stats)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ours = {k[: -len(".input_amax")]: float(v) for k, v in load_file(stats).items()
            if k.endswith(".input_amax")}

    groups = collections.defaultdict(list)
    for m in theirs:
        groups[group_key(m)].append(m)
    checked = collections.Counter()
    for key, members in groups.items():
        ref = max(theirs[m] for m in members)
        got = max(ours.get(m, 0.0) for m in members)
        assert abs(got - ref) <= 0.01 * ref, f"{family} {key}: fp4kit {got} vs ModelOpt {ref}"
        checked["expert" if ".experts." in key else "dense"] += 1
    assert checked["expert"] >= 4 and checked["dense"] >= 8, checked


def test_gpt_oss_bmm_expert_and_attention_input_amax_within_1_percent_of_modelopt(tmp_path):
    """gpt-oss: ModelOpt's GptOssExperts quantizers (gate_up_proj_input_quantizer,
    down_proj_input_quantizer: one amax per layer over every token routed to any expert) against
    fp4kit's stats of the plan's module names `<layer>.mlp.experts.gate_up_proj` / `down_proj`;
    q/k/v/o one to one. Tokens: the 4 x 32 windows (longer than sliding_window 16)."""
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForCausalLM

    src = tiny_models.save("gpt_oss", tmp_path / "src")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        model = mtq.quantize(model, mtq.NVFP4_DEFAULT_CFG, lambda m: m(CALIB_IDS))
    theirs = modelopt_input_amax(model, "gpt_oss")
    layers = model.config.num_hidden_layers
    want = {f"model.layers.{l}.{m}" for l in range(layers)
            for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                      "self_attn.o_proj", "mlp.experts.gate_up_proj", "mlp.experts.down_proj")}
    assert want <= set(theirs), sorted(want - set(theirs))

    ids = tmp_path / "ids.u32"
    CALIB_IDS.numpy().astype("<u4").tofile(ids)
    stats = tmp_path / "stats.safetensors"
    proc = subprocess.run([str(require_executable(fp4kit_bin())), "calibrate", str(src), "--data",
                           str(ids), "--samples", "4", "--seq-len", "32", "-o", str(stats)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    raw = load_file(stats)
    ours = {k[: -len(".input_amax")]: float(v) for k, v in raw.items() if k.endswith(".input_amax")}
    # Exactly the plan's names: no per-expert or gate/up-split entries for BMM experts.
    assert set(ours) == want, sorted(set(ours) ^ want)
    worst = 0.0
    for name in sorted(want):
        ref = theirs[name]
        assert ref > 0, name
        worst = max(worst, abs(ours[name] - ref) / ref)
        assert abs(ours[name] - ref) <= 0.01 * ref, f"gpt_oss {name}: fp4kit {ours[name]} vs ModelOpt {ref}"
    print(f"gpt_oss: worst relative amax difference vs ModelOpt (bf16): {worst:.4%}")
    # Every routed (token, expert) pair counted once per layer: 128 tokens x top-2.
    for l in range(layers):
        routed = sum(int(v) for k, v in raw.items()
                     if k.startswith(f"model.layers.{l}.mlp.experts.") and k.endswith(".routed_tokens"))
        assert routed == CALIB_IDS.numel() * model.config.num_experts_per_tok, (l, routed)


def test_gpt_oss_all_experts_amax_equals_float32_recomputation(tmp_path):
    """--all-experts on gpt-oss: every expert of a layer runs on every token reaching the layer,
    so `<layer>.mlp.experts.gate_up_proj` sees all MoE inputs and `down_proj` the clamped-SwiGLU
    output of every (token, expert) pair. Both equal a float32 PyTorch recomputation from the MoE
    block inputs (forward hooks on the bf16 checkpoint loaded in float32) to float rounding; the
    routed statistics (no flag) give the same gate_up amax (every token is routed somewhere) and
    a down_proj amax no larger."""
    from transformers import AutoModelForCausalLM

    src = tiny_models.save("gpt_oss", tmp_path / "src")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    inputs = {}
    hooks = [layer.mlp.register_forward_hook(
        lambda m, args, out, i=i: inputs.__setitem__(i, args[0].detach().reshape(-1, args[0].shape[-1])))
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        model(CALIB_IDS)
    for h in hooks:
        h.remove()

    ids = tmp_path / "ids.u32"
    CALIB_IDS.numpy().astype("<u4").tofile(ids)
    stats = {}
    for flag in ("routed", "all"):
        out = tmp_path / f"{flag}.safetensors"
        proc = subprocess.run([str(require_executable(fp4kit_bin())), "calibrate", str(src), "--data",
                               str(ids), "--samples", "4", "--seq-len", "32", "-o", str(out)]
                              + (["--all-experts"] if flag == "all" else []),
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        stats[flag] = {k: float(v) for k, v in load_file(out).items() if k.endswith(".input_amax")}
    for i, x in inputs.items():
        ex = model.model.layers[i].mlp.experts
        with torch.no_grad():
            acts = [ex._apply_gate(x @ ex.gate_up_proj[e] + ex.gate_up_proj_bias[e])
                    for e in range(ex.num_experts)]
        want_gu = float(x.abs().max())
        want_dn = float(max(a.abs().max() for a in acts))
        p = f"model.layers.{i}.mlp.experts."
        got_gu = stats["all"][p + "gate_up_proj.input_amax"]
        got_dn = stats["all"][p + "down_proj.input_amax"]
        assert abs(got_gu - want_gu) <= 1e-5 * want_gu, (i, got_gu, want_gu)
        assert abs(got_dn - want_dn) <= 1e-5 * want_dn, (i, got_dn, want_dn)
        assert stats["routed"][p + "gate_up_proj.input_amax"] == got_gu
        assert stats["routed"][p + "down_proj.input_amax"] <= got_dn
