"""fp4kit's engine on Qwen3.5/3.6-MoE (qwen3_5_moe wrapper and qwen3_5_moe_text) and Qwen3-Next
(qwen3_next) against transformers (CPU, float32) on tiny random models: Gated DeltaNet layers
(both projection namings), gated full attention with partial RoPE, zero-centred norms, MoE with
a gated shared expert (fused 3-D experts in Qwen3.5, per-expert in Qwen3-Next, a dense
mlp_only layer). 100 tokens: the delta rule runs over two chunks of 64.

Run: FP4KIT_BIN=build/fp4kit pytest python/tests/test_engine_qwen3_next.py
"""
import json
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_engine_conformance import assert_logits_match, fp4kit_bin, fp4kit_logits  # noqa: E402

VOCAB = 256
SEQ = 100

COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
              linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4,
              moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4,
              num_experts_per_tok=2, max_position_embeddings=256, rms_norm_eps=1e-6,
              tie_word_embeddings=False)


def randomize(model, seed: int = 0):
    """Weights that make every part matter: zero-centred norm weights away from 0, decays
    exp(A_log) in [0.5, 2], a conv strong enough to mix neighbours."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.empty(p.shape).uniform_(0.5, 2.0, generator=g).log())
            elif p.dim() == 1:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "conv1d" in name:
                p.copy_(0.4 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model.eval()


def build(variant: str):
    if variant == "qwen3_5_moe_text":
        cfg = transformers.Qwen3_5MoeTextConfig(
            num_hidden_layers=2, layer_types=["linear_attention", "full_attention"], **COMMON)
        model = transformers.Qwen3_5MoeForCausalLM(cfg)
    elif variant == "qwen3_5_moe":
        text = transformers.Qwen3_5MoeTextConfig(
            num_hidden_layers=2, layer_types=["linear_attention", "full_attention"], **COMMON)
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=64, patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=64)
        model = transformers.Qwen3_5MoeForConditionalGeneration(transformers.Qwen3_5MoeConfig(
            text_config=text.to_dict(), vision_config=vision, tie_word_embeddings=False))
    else:  # qwen3_next: per-expert experts, grouped in_proj_qkvz / in_proj_ba, a dense layer 2
        cfg = transformers.Qwen3NextConfig(
            num_hidden_layers=3, layer_types=["linear_attention", "full_attention",
                                              "linear_attention"],
            mlp_only_layers=[2], intermediate_size=48, norm_topk_prob=False, **COMMON)
        model = transformers.Qwen3NextForCausalLM(cfg)
    model.config._attn_implementation = "eager"
    if hasattr(model.config, "text_config"):
        model.config.text_config._attn_implementation = "eager"
    return randomize(model)


def ids() -> np.ndarray:
    return np.random.default_rng(3).integers(0, VOCAB, size=SEQ + 1, dtype=np.uint16)


def text_model(model):
    return model.model.language_model if hasattr(model.model, "language_model") else model.model


def modeling(model):
    import importlib
    return importlib.import_module(type(text_model(model).layers[0].linear_attn).__module__)


@pytest.mark.parametrize("variant", ["qwen3_5_moe_text", "qwen3_5_moe", "qwen3_next"])
def test_logits_match_transformers_fp32(variant, tmp_path):
    """Each feature in play moves transformers' logits by far more than the tolerance when
    switched off, so the comparison would catch its absence."""
    binary = fp4kit_bin()
    model = build(variant)
    model.save_pretrained(tmp_path / "model")
    if variant == "qwen3_5_moe":  # the wrapper: text_config, text under model.language_model.
        assert "text_config" in json.loads((tmp_path / "model" / "config.json").read_text())
    x = ids()
    inp = torch.tensor(x[:-1].astype(np.int64))[None]
    with torch.no_grad():
        ref = model(input_ids=inp).logits[0].numpy()
    got = fp4kit_logits(binary, tmp_path / "model", x, tmp_path)
    rng = assert_logits_match(got, ref, variant)

    m = modeling(model)
    tm = text_model(model)
    variants = {}
    with torch.no_grad():
        def run():
            return model(input_ids=inp).logits[0].numpy()

        conv, l2 = m.causal_conv1d_fn, m.l2norm
        m.causal_conv1d_fn = lambda h, weight, bias=None, activation=None, **kw: torch.nn.functional.silu(h)
        variants["no causal conv"] = run()
        m.causal_conv1d_fn = conv
        m.l2norm = lambda t, dim=-1, eps=1e-6: t
        variants["no q/k L2 norm"] = run()
        m.l2norm = l2
        la = [l.linear_attn for l in tm.layers if hasattr(l, "linear_attn")]
        a_logs = [a.A_log.clone() for a in la]
        for a in la:
            a.A_log.fill_(-30.0)  # exp(A_log) = 0: no decay
        variants["no decay"] = run()
        for a, v in zip(la, a_logs):
            a.A_log.copy_(v)
        sig = torch.sigmoid
        torch.sigmoid = lambda t: torch.ones_like(t)  # only the attention output gate calls it
        variants["no attention output gate"] = run()
        torch.sigmoid = sig
        norm_cls = type(tm.norm)
        fwd = norm_cls.forward
        norm_cls.forward = lambda self, h: (h.float() * torch.rsqrt(
            h.float().pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()).type_as(h)
        variants["norms w, not 1 + w"] = run()
        norm_cls.forward = fwd
        rot = tm.rotary_emb
        partial = rot.inv_freq.clone()
        d = tm.config.head_dim
        rot.inv_freq = 1.0 / (rot.config.rope_parameters["rope_theta"]
                              ** (torch.arange(0, d, 2, dtype=torch.float) / d))
        variants["full instead of partial RoPE"] = run()
        rot.inv_freq = partial
    for what, other in variants.items():
        moved = float(np.abs(other - ref).max())
        print(f"  {what}: reference moves by {moved:.3g}")
        assert moved > 20 * 1e-4 * rng, f"{what}: reference moved only {moved}"
    np.testing.assert_array_equal(model(input_ids=inp).logits[0].detach().numpy(), ref)


def run_fp4kit(*args):
    import subprocess
    p = subprocess.run([fp4kit_bin(), *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p


def rewrite(src, dst, change):
    """A copy of checkpoint `src` whose tensors pass through `change(dict)`."""
    import shutil
    from safetensors.torch import load_file, save_file
    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        t = load_file(f)
        change(t)
        save_file(t, f, metadata={"format": "pt"})
    return dst


def test_fused_experts_read_in_place_equal_per_expert(tmp_path):
    """Real Qwen3.5/3.6 checkpoints store the routed experts fused (experts.gate_up_proj
    [E, 2I, H] with gate rows first, experts.down_proj [E, H, I]; transformers saves per-expert
    tensors). The wrapper's checkpoint rewritten fused gives the same logits and statistics
    (under the same per-expert names) bit for bit."""
    from safetensors.numpy import load_file as load_np

    model = build("qwen3_5_moe")
    model.save_pretrained(tmp_path / "per_expert")
    E = model.config.text_config.num_experts
    fused_names = []

    def fuse(t):
        for prefix in sorted({k.split("experts.")[0] for k in t if ".experts.0.gate_proj" in k}):
            x = prefix + "experts."
            gate_up = [torch.cat([t.pop(f"{x}{e}.gate_proj.weight"), t.pop(f"{x}{e}.up_proj.weight")])
                       for e in range(E)]
            t[x + "gate_up_proj"] = torch.stack(gate_up).contiguous()
            t[x + "down_proj"] = torch.stack([t.pop(f"{x}{e}.down_proj.weight")
                                              for e in range(E)]).contiguous()
            fused_names.append(x + "gate_up_proj")

    fused = rewrite(tmp_path / "per_expert", tmp_path / "fused", fuse)
    assert len(fused_names) == 2 and all(n.startswith("model.language_model.") for n in fused_names)
    x = ids()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = fp4kit_logits(fp4kit_bin(), tmp_path / "per_expert", x, tmp_path / "a")
    b = fp4kit_logits(fp4kit_bin(), fused, x, tmp_path / "b")
    np.testing.assert_array_equal(a, b)
    stats = {}
    for name in ("per_expert", "fused"):
        run_fp4kit("calibrate", tmp_path / name, "--data", tmp_path / "a" / "ids.u16", "--samples",
                   "1", "--seq-len", SEQ, "-o", tmp_path / f"{name}.safetensors")
        stats[name] = load_np(str(tmp_path / f"{name}.safetensors"))
    assert sorted(stats["fused"]) == sorted(stats["per_expert"])
    assert any(".experts.3.down_proj." in k for k in stats["fused"])
    for k, v in stats["fused"].items():
        np.testing.assert_array_equal(v, stats["per_expert"][k], err_msg=k)


def test_w4a4_eval_simulates_linear_attention_activations(tmp_path):
    """`fp4kit eval` on fp4kit's own W4A4 Qwen3.5 output (calibrate + quantize --stats
    --quantize-linear-attn): the linear-attention projections' input_scale is honoured (the logits
    move when it is removed) and the W4A4 model stays near the weight-only one."""
    model = build("qwen3_5_moe_text")
    model.save_pretrained(tmp_path / "src")
    x = ids()
    (tmp_path / "ids.u16").write_bytes(x.tobytes())
    run_fp4kit("calibrate", tmp_path / "src", "--data", tmp_path / "ids.u16", "--samples", "1",
               "--seq-len", SEQ, "-o", tmp_path / "stats.safetensors")
    for out, extra in (("w4a16", ["--weights-only"]),
                       ("w4a4", ["--stats", tmp_path / "stats.safetensors"])):
        run_fp4kit("quantize", tmp_path / "src", tmp_path / out, "--quantize-linear-attn", *extra)
    dropped = []

    def drop(t):
        for k in [k for k in t if ".linear_attn." in k and k.endswith(".input_scale")]:
            dropped.append(k)
            del t[k]

    plain = rewrite(tmp_path / "w4a4", tmp_path / "w4a4-plain-linear-attn", drop)
    assert len(dropped) == 3, dropped  # in_proj_qkv, in_proj_z, out_proj
    logits = {}
    for name in ("w4a16", "w4a4", "w4a4-plain-linear-attn"):
        (tmp_path / f"l-{name}").mkdir()
        logits[name] = fp4kit_logits(fp4kit_bin(), tmp_path / name, x, tmp_path / f"l-{name}")
    rng = float(logits["w4a16"].max() - logits["w4a16"].min())
    assert float(np.abs(logits["w4a4"] - logits["w4a4-plain-linear-attn"]).max()) > 1e-3 * rng
    assert float(np.abs(logits["w4a4"] - logits["w4a16"]).max()) < 0.5 * rng
