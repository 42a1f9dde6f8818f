"""fp4kit's engine on DeepSeek-V3 (multi-head latent attention, group-limited sigmoid router),
GLM-4-MoE and OLMoE against transformers (CPU, float32) on tiny random models, and its calibrated
input amax against ModelOpt's (CPU, bf16).

Logits: `fp4kit eval MODEL --dump-logits` vs transformers' eager forward: max |diff| <= 1e-4 of
the logit range. Each feature a variant exercises moves transformers' logits by far more than that
when it is switched off in the reference, so the comparison would catch its absence.
"""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from test_engine_conformance import assert_logits_match, fp4kit_bin, fp4kit_logits

transformers = pytest.importorskip("transformers")

VOCAB = 256
SEQ = 48

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "beta_fast": 32.0,
        "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 16}

# DeepSeek-V3: 16 routed experts of 32 (top-3) and a shared expert, layer 0 dense; MLA with 4 heads,
# kv_lora_rank 32, q/k heads of 16 + 16, value heads of 24 (!= 32: the value head size matters).
DEEPSEEK = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                num_hidden_layers=3, first_k_dense_replace=1, n_routed_experts=16,
                n_shared_experts=1, num_experts_per_tok=3, routed_scaling_factor=2.5,
                num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=32,
                qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=24)
DEEPSEEK_VARIANTS = {
    # q-LoRA, YaRN (mscale_all_dim: the softmax scale changes), 4 groups of 4, 2 groups compete,
    # interleaved RoPE pairs
    "qlora_yarn_groups": dict(q_lora_rank=32, n_group=4, topk_group=2, rope_interleave=True,
                              rope_parameters=YARN),
    # q_proj, plain RoPE in rotate_half form, one group
    "q_proj": dict(q_lora_rank=None, n_group=1, topk_group=1, rope_interleave=False,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
}

COMMON = dict(vocab_size=VOCAB, max_position_embeddings=256, tie_word_embeddings=False)


def random_fp32(cfg, path: Path, seed: int = 0):
    """The model of `cfg` with random weights (norm weights around 1, routers' selection bias
    non-zero), saved, reloaded in float32 with eager attention."""
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn_like(b))
    model.save_pretrained(path)
    return transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager").eval()


def ids_for(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=SEQ + 1, dtype=np.uint16)


def logits_vs_transformers(model, model_dir: Path, ids_seed: int, label: str, tmp_path: Path):
    """fp4kit eval's logits on `model_dir` against `model` (float32, eager) on the same ids;
    returns (input ids tensor, reference logits, logit range)."""
    ids = ids_for(ids_seed)
    inp = torch.tensor(ids[:-1].astype(np.int64))[None]
    with torch.no_grad():
        ref = model(inp).logits[0].numpy()
    got = fp4kit_logits(fp4kit_bin(), model_dir, ids, tmp_path)
    return inp, ref, assert_logits_match(got, ref, label)


def zero_selection_bias(routers):
    """Switch: e_score_correction_bias of every router set to zero."""
    def switch(m):
        saved = [r.e_score_correction_bias.clone() for r in routers]
        for r in routers:
            r.e_score_correction_bias.zero_()
        return lambda: [r.e_score_correction_bias.copy_(s) for r, s in zip(routers, saved)]
    return switch


def check_features_matter(model, inp, ref, rng, switches: dict):
    """Each switch(model) -> undo changes the reference by > 20x the tolerance."""
    for what, switch in switches.items():
        with torch.no_grad():
            undo = switch(model)
            other = model(inp).logits[0].numpy()
            undo()
        moved = float(np.abs(other - ref).max())
        print(f"  {what}: reference moves by {moved:.3g}")
        assert moved > 20 * 1e-4 * rng, f"{what}: reference moved only {moved}"


def set_attr(objs, name, value):
    old = [getattr(o, name) for o in objs]
    for o in objs:
        setattr(o, name, value)
    return lambda: [setattr(o, name, v) for o, v in zip(objs, old)]


def mla_parts(model):
    """The attention modules and the routers of a DeepSeek model (dense and MoE layers both)."""
    layers = model.model.layers
    routers = [l.mlp.gate for l in layers if hasattr(l.mlp, "gate")]
    assert routers and len(routers) < len(layers), "needs dense and MoE layers"
    return [l.self_attn for l in layers], routers


def deepseek_switches(model, variant):
    attn, routers = mla_parts(model)

    def flip_rope_pairing(m):
        return set_attr([m.config], "rope_interleave", not m.config.rope_interleave)

    s = {"no selection bias": zero_selection_bias(routers),
         "no routed_scaling_factor": lambda m: set_attr(routers, "routed_scaling_factor", 1.0),
         "other RoPE pairing": flip_rope_pairing,
         "no renormalisation": lambda m: set_attr(routers, "norm_topk_prob", False)}
    if variant == "qlora_yarn_groups":
        plain = (model.config.qk_nope_head_dim + model.config.qk_rope_head_dim) ** -0.5
        assert abs(attn[0].scaling - plain) > 0.1 * plain, "mscale does not change the scale"
        s["softmax scale without mscale"] = lambda m: set_attr(attn, "scaling", plain)
        s["no group limit"] = lambda m: set_attr(routers, "topk_group", m.config.n_group)
    return s


@pytest.mark.parametrize("variant", sorted(DEEPSEEK_VARIANTS))
def test_deepseek_v3_logits_match_transformers_fp32(variant, tmp_path):
    cfg = transformers.DeepseekV3Config(**DEEPSEEK, **DEEPSEEK_VARIANTS[variant], **COMMON,
                                        rms_norm_eps=1e-6)
    model = random_fp32(cfg, tmp_path / "model")
    assert (model.config.q_lora_rank is None) == (variant == "q_proj")
    inp, ref, rng = logits_vs_transformers(model, tmp_path / "model", 7,
                                           f"deepseek_v3 ({variant})", tmp_path)
    check_features_matter(model, inp, ref, rng, deepseek_switches(model, variant))


# DeepSeek-V2 (transformers' deepseek_v2): the same MLA as V3 but RoPE always on interleaved pairs
# (complex multiplication; config.json's rope_interleave is not read) and a softmax router: greedy
# top-k (V2-Lite, no q-LoRA) or group_limited_greedy (V2: a group scores its best expert), weights
# times routed_scaling_factor, never renormalised (norm_topk_prob is not read), no selection bias.
DEEPSEEK_V2 = {k: v for k, v in DEEPSEEK.items() if k != "routed_scaling_factor"}
DEEPSEEK_V2_VARIANTS = {
    # V2-Lite: q_proj, greedy, plain RoPE; norm_topk_prob true and rope_interleave false in
    # config.json, both ignored by transformers (and by fp4kit)
    "lite_greedy": dict(q_lora_rank=None, topk_method="greedy", routed_scaling_factor=1.5,
                        norm_topk_prob=True,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    # V2: q-LoRA, YaRN (mscale_all_dim), 4 groups of 4 experts, 2 compete
    "qlora_yarn_group_limited": dict(q_lora_rank=32, topk_method="group_limited_greedy",
                                     n_group=4, topk_group=2, routed_scaling_factor=2.5,
                                     rope_parameters=YARN),
}


def neox_rotary_emb(xq, xk, freqs_cis):
    """DeepSeek-V2's rotary embedding applied in rotate_half form (pairs (i, i + d/2)) instead of
    its interleaved pairs (2i, 2i + 1)."""
    f = freqs_cis.unsqueeze(1)
    cos = torch.cat((f.real, f.real), -1).to(xq.dtype)
    sin = torch.cat((f.imag, f.imag), -1).to(xq.dtype)

    def rot(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), -1)
    return xq * cos + rot(xq) * sin, xk * cos + rot(xk) * sin


def deepseek_v2_switches(model, variant):
    import transformers.models.deepseek_v2.modeling_deepseek_v2 as v2
    attn, routers = mla_parts(model)

    def other_pairing(m):
        old = v2.apply_rotary_emb
        v2.apply_rotary_emb = neox_rotary_emb
        return lambda: setattr(v2, "apply_rotary_emb", old)

    def renormalised(m):
        for r in routers:
            fwd = r.forward

            def normed(h, fwd=fwd, r=r):
                logits, w, idx = fwd(h)
                return logits, w / w.sum(-1, keepdim=True) * r.routed_scaling_factor, idx
            r.forward = normed
        return lambda: [r.__dict__.pop("forward") for r in routers]

    def sigmoid_scores(m):
        for r in routers:
            def sig(h, r=r):
                logits = torch.nn.functional.linear(h.view(-1, r.hidden_dim).float(),
                                                    r.weight.float())
                w, idx = torch.topk(logits.sigmoid(), r.top_k, dim=-1)
                return logits, w * r.routed_scaling_factor, idx
            r.forward = sig
        return lambda: [r.__dict__.pop("forward") for r in routers]

    s = {"no routed_scaling_factor": lambda m: set_attr(routers, "routed_scaling_factor", 1.0),
         "rotate_half RoPE pairs": other_pairing,
         "renormalised top-k": renormalised,
         "sigmoid scores (V3)": sigmoid_scores}
    if variant == "qlora_yarn_group_limited":
        plain = (model.config.qk_nope_head_dim + model.config.qk_rope_head_dim) ** -0.5
        assert abs(attn[0].scaling - plain) > 0.1 * plain, "mscale does not change the scale"
        s["softmax scale without mscale"] = lambda m: set_attr(attn, "scaling", plain)
        s["no group limit"] = lambda m: set_attr(routers, "topk_method", "greedy")
    return s


@pytest.mark.parametrize("variant", sorted(DEEPSEEK_V2_VARIANTS))
def test_deepseek_v2_logits_match_transformers_fp32(variant, tmp_path):
    cfg = transformers.DeepseekV2Config(**DEEPSEEK_V2, **DEEPSEEK_V2_VARIANTS[variant], **COMMON,
                                        rms_norm_eps=1e-6)
    model = random_fp32(cfg, tmp_path / "model", seed=3)
    assert model.config.model_type == "deepseek_v2"
    assert (model.config.q_lora_rank is None) == (variant == "lite_greedy")
    assert not any("e_score_correction_bias" in n for n, _ in model.named_buffers())
    if variant == "lite_greedy":  # keys transformers' V2 never reads
        c = json.loads((tmp_path / "model" / "config.json").read_text())
        c.update(rope_interleave=False, scoring_func="softmax")
        (tmp_path / "model" / "config.json").write_text(json.dumps(c))
    inp, ref, rng = logits_vs_transformers(model, tmp_path / "model", 10,
                                           f"deepseek_v2 ({variant})", tmp_path)
    check_features_matter(model, inp, ref, rng, deepseek_v2_switches(model, variant))


def test_deepseek_v2_gready_spelling_is_greedy(tmp_path):
    """DeepSeek-V2's own configuration / modeling code (trust_remote_code) names plain top-k
    "gready", its default, so configs written with it carry that spelling; transformers knows only
    "greedy". fp4kit reads "gready" as greedy: its logits on that config.json match transformers'
    on the "greedy" one (the same weights)."""
    cfg = transformers.DeepseekV2Config(**DEEPSEEK_V2, **DEEPSEEK_V2_VARIANTS["lite_greedy"],
                                        **COMMON)
    model = random_fp32(cfg, tmp_path / "model", seed=6)
    c = json.loads((tmp_path / "model" / "config.json").read_text())
    assert c["topk_method"] == "greedy"
    c["topk_method"] = "gready"
    (tmp_path / "model" / "config.json").write_text(json.dumps(c))
    logits_vs_transformers(model, tmp_path / "model", 15, "deepseek_v2 (gready)", tmp_path)


def test_deepseek_v2_refuses_unknown_topk_method(tmp_path):
    """transformers' DeepseekV2TopkRouter knows greedy and group_limited_greedy only (noaux_tc is
    V3's): another topk_method is refused, naming the file and the key."""
    cfg = transformers.DeepseekV2Config(**DEEPSEEK_V2, **DEEPSEEK_V2_VARIANTS["lite_greedy"],
                                        **COMMON)
    random_fp32(cfg, tmp_path / "model", seed=3)
    c = json.loads((tmp_path / "model" / "config.json").read_text())
    c["topk_method"] = "noaux_tc"
    (tmp_path / "model" / "config.json").write_text(json.dumps(c))
    ids = tmp_path / "ids.u32"
    ids_for(10).astype("<u4").tofile(ids)
    p = subprocess.run([fp4kit_bin(), "calibrate", str(tmp_path / "model"), "--data", str(ids),
                        "--samples", "1", "--seq-len", "16", "-o",
                        str(tmp_path / "stats.safetensors")], capture_output=True, text=True)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "topk_method" in p.stderr and "config.json" in p.stderr, p.stderr


# Kimi-K2 (Instruct, Base, 0905, Thinking) as Moonshot publishes its config.json: model_type
# "kimi_k2", architectures ["DeepseekV3ForCausalLM"], auto_map to DeepSeek-V3's own code, Kimi's
# values (one expert group, routed_scaling_factor 2.827, rope_theta 50000, YaRN factor 32 with
# beta_fast = beta_slow = 1 in the legacy rope_scaling form, one dense layer), no head_dim. Scaled
# down to the tiny DeepSeek-V3 of this file.
def kimi_k2_config() -> dict:
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                     "AutoModel": "modeling_deepseek.DeepseekV3Model",
                     "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
        "model_type": "kimi_k2", "attention_bias": False, "attention_dropout": 0.0,
        "aux_loss_alpha": 0.001, "bos_token_id": 1, "eos_token_id": 2, "ep_size": 1,
        "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 64,
        "initializer_range": 0.02, "intermediate_size": 96, "kv_lora_rank": 32,
        "max_position_embeddings": 256, "moe_intermediate_size": 32, "moe_layer_freq": 1,
        "n_group": 1, "n_routed_experts": 16, "n_shared_experts": 1, "norm_topk_prob": True,
        "num_attention_heads": 4, "num_experts_per_tok": 3, "num_hidden_layers": 3,
        "num_key_value_heads": 4, "num_nextn_predict_layers": 0, "pretraining_tp": 1,
        "q_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "rms_norm_eps": 1e-6,
        "rope_scaling": {"beta_fast": 1.0, "beta_slow": 1.0, "factor": 32.0, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                         "type": "yarn"},
        "rope_theta": 50000.0, "routed_scaling_factor": 2.827, "scoring_func": "sigmoid",
        "seq_aux": True, "tie_word_embeddings": False, "topk_group": 1,
        "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "use_cache": True,
        "v_head_dim": 24, "vocab_size": VOCAB,
    }


def kimi_k2_checkpoints(tmp_path: Path):
    """The tiny model's weights under Kimi's config.json (`kimi`) and under the same config with
    model_type deepseek_v3 (`as_v3`: what Kimi's deployment guide tells frameworks without
    kimi_k2 to do, and what transformers' kimi_k25 does to a kimi_k2 text config)."""
    import shutil
    cfg = kimi_k2_config()
    v3 = transformers.DeepseekV3Config(**{**{k: v for k, v in cfg.items()
                                              if k not in ("model_type", "auto_map")},
                                           "rope_parameters": {**cfg["rope_scaling"],
                                                               "rope_type": "yarn",
                                                               "rope_theta": cfg["rope_theta"]}})
    random_fp32(v3, tmp_path / "src", seed=4)
    dirs = {}
    for name, model_type in (("kimi", "kimi_k2"), ("as_v3", "deepseek_v3")):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(tmp_path / "src" / "model.safetensors", d / "model.safetensors")
        (d / "config.json").write_text(json.dumps({**cfg, "model_type": model_type}))
        dirs[name] = d
    return dirs


def test_kimi_k2_config_runs_as_deepseek_v3(tmp_path):
    """fp4kit eval on the kimi_k2 checkpoint against transformers' DeepseekV3 on the as_v3 twin
    (float32): logits within 1e-4 of the range; Kimi's YaRN matters (the softmax scale with
    mscale); calibrate gives the two checkpoints the same statistics, and quantize --stats the
    same W4A4 tensors, byte for byte."""
    from safetensors.torch import load_file
    dirs = kimi_k2_checkpoints(tmp_path)
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(
        dirs["as_v3"], dtype=torch.float32, attn_implementation="eager").eval()
    assert ref_model.config.rope_parameters["rope_type"] == "yarn"
    assert ref_model.config.rope_parameters["rope_theta"] == 50000.0
    inp, ref, rng = logits_vs_transformers(ref_model, dirs["kimi"], 11, "kimi_k2", tmp_path)
    attn = [l.self_attn for l in ref_model.model.layers]
    routers = [l.mlp.gate for l in ref_model.model.layers if hasattr(l.mlp, "gate")]
    plain = (16 + 16) ** -0.5
    check_features_matter(ref_model, inp, ref, rng, {
        "softmax scale without mscale": lambda m: set_attr(attn, "scaling", plain),
        "no routed_scaling_factor": lambda m: set_attr(routers, "routed_scaling_factor", 1.0)})
    ids = tmp_path / "ids.u32"
    ids_for(12).astype("<u4").tofile(ids)
    stats = {}
    for name, d in dirs.items():
        out = tmp_path / f"{name}.stats.safetensors"
        p = subprocess.run([fp4kit_bin(), "calibrate", str(d), "--data", str(ids), "--samples",
                            "1", "--seq-len", "32", "-o", str(out)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        stats[name] = load_file(out)
    assert stats["kimi"].keys() == stats["as_v3"].keys()
    assert any("kv_b_proj" in k for k in stats["kimi"])
    for k, v in stats["kimi"].items():
        assert torch.equal(v, stats["as_v3"][k]), k
    # W4A4 from those stats: the same tensors, and the output keeps Kimi's model_type.
    from test_quantize_modelopt import fp4kit_quantize, read_tensors
    outs = {name: fp4kit_quantize(d, tmp_path / f"{name}.w4a4",
                                  ["--stats", tmp_path / f"{name}.stats.safetensors"])
            for name, d in dirs.items()}
    a, b = read_tensors(outs["kimi"]), read_tensors(outs["as_v3"])
    assert a.keys() == b.keys() and any(k.endswith("kv_b_proj.input_scale") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.loads((outs["kimi"] / "config.json").read_text())["model_type"] == "kimi_k2"


def test_kimi_k2_with_another_architecture_is_refused(tmp_path):
    """model_type kimi_k2 is accepted as what Moonshot publishes (DeepseekV3ForCausalLM); under
    another architecture it is not known to be that model: refused, naming the file."""
    dirs = kimi_k2_checkpoints(tmp_path)
    c = json.loads((dirs["kimi"] / "config.json").read_text())
    c["architectures"] = ["KimiK2ForCausalLM"]
    (dirs["kimi"] / "config.json").write_text(json.dumps(c))
    ids = tmp_path / "ids.u32"
    ids_for(12).astype("<u4").tofile(ids)
    p = subprocess.run([fp4kit_bin(), "calibrate", str(dirs["kimi"]), "--data", str(ids),
                        "--samples", "1", "--seq-len", "16", "-o", str(tmp_path / "s.safetensors")],
                       capture_output=True, text=True)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "KimiK2ForCausalLM" in p.stderr and "config.json" in p.stderr, p.stderr


# head_dim in DeepSeek configs. MLA's widths are qk_nope/qk_rope/v_head_dim: published configs
# (DeepSeek-V2/V3, Kimi-K2) carry no head_dim, and hidden_size / num_attention_heads means nothing
# to the model (V3: 7168 / 128 = 56). transformers sets head_dim = qk_rope_head_dim; V2 overwrites
# a head_dim of config.json, V3 keeps it and sizes its RoPE with it (so only qk_rope_head_dim
# works there).
HEAD_DIM_CASES = {
    # no head_dim, hidden / heads = 9 (odd): valid, the standard-attention rule must not apply
    "v3_no_head_dim_odd_ratio": ("v3", dict(hidden_size=72, num_attention_heads=8,
                                                  num_key_value_heads=8), None),
    # no head_dim, hidden / heads = 1
    "v2_no_head_dim_ratio_1": ("v2", dict(hidden_size=64, num_attention_heads=64,
                                                num_key_value_heads=64), None),
    # head_dim 8 in config.json: V2 ignores it
    "v2_other_head_dim": ("v2", dict(), 8),
}


def head_dim_case(case: str, path: Path):
    version, dims, head_dim = HEAD_DIM_CASES[case]
    if version == "v3":
        cfg = transformers.DeepseekV3Config(**{**DEEPSEEK, **dims},
                                            **DEEPSEEK_VARIANTS["qlora_yarn_groups"], **COMMON)
    else:
        cfg = transformers.DeepseekV2Config(**{**DEEPSEEK_V2, **dims},
                                            **DEEPSEEK_V2_VARIANTS["lite_greedy"], **COMMON)
    random_fp32(cfg, path, seed=5)
    c = json.loads((path / "config.json").read_text())
    assert c.get("head_dim") == 16  # what transformers writes: qk_rope_head_dim
    if head_dim is None:
        del c["head_dim"]
    else:
        c["head_dim"] = head_dim
    (path / "config.json").write_text(json.dumps(c))
    return c


@pytest.mark.parametrize("case", sorted(HEAD_DIM_CASES))
def test_deepseek_configs_without_or_with_ignored_head_dim_run(case, tmp_path):
    """Valid DeepSeek configs whose hidden_size / num_attention_heads is not a usable head width
    (odd, 1), or whose head_dim V2 ignores: fp4kit runs them and matches transformers (loaded
    from the same edited config.json)."""
    c = head_dim_case(case, tmp_path / "model")
    if "head_dim" not in c:
        assert (c["hidden_size"] // c["num_attention_heads"]) % 2 == 1
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "model", dtype=torch.float32, attn_implementation="eager").eval()
    assert model.config.head_dim == 16
    logits_vs_transformers(model, tmp_path / "model", 13, f"head_dim case {case}", tmp_path)


@pytest.mark.parametrize("head_dim", [8, 32, None])
def test_deepseek_v3_head_dim_contradicting_qk_rope_is_refused(head_dim, tmp_path):
    """A DeepSeek-V3 config.json whose head_dim (null: hidden_size / num_attention_heads, here
    72 / 4 = 18) is not qk_rope_head_dim (16): transformers' forward fails on it (its RoPE is
    head_dim wide), fp4kit refuses it naming both fields."""
    cfg = transformers.DeepseekV3Config(**{**DEEPSEEK, "hidden_size": 72},
                                        **DEEPSEEK_VARIANTS["q_proj"], **COMMON)
    random_fp32(cfg, tmp_path / "model", seed=5)
    c = json.loads((tmp_path / "model" / "config.json").read_text())
    c["head_dim"] = head_dim
    (tmp_path / "model" / "config.json").write_text(json.dumps(c))
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model",
                                                              dtype=torch.float32).eval()
    with pytest.raises(RuntimeError), torch.no_grad():
        model(torch.tensor(ids_for(14)[None, :-1].astype(np.int64)))
    ids = tmp_path / "ids.u32"
    ids_for(14).astype("<u4").tofile(ids)
    p = subprocess.run([fp4kit_bin(), "calibrate", str(tmp_path / "model"), "--data", str(ids),
                        "--samples", "1", "--seq-len", "16", "-o", str(tmp_path / "s.safetensors")],
                       capture_output=True, text=True)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "head_dim" in p.stderr and "qk_rope_head_dim 16" in p.stderr, p.stderr
    assert "config.json" in p.stderr, p.stderr


# GLM-4-MoE: head_dim 16 with partial rotary 0.5 (8 rotated dims), 8 routed experts of 32 in 2
# groups (1 competes), top-2, routed_scaling_factor 2.5, a shared expert, layer 0 dense.
GLM = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
           first_k_dense_replace=1, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
           n_group=2, topk_group=1, routed_scaling_factor=2.5, num_attention_heads=4,
           num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                            "partial_rotary_factor": 0.5})
GLM_VARIANTS = {
    "qk_norm_bias": dict(use_qk_norm=True, attention_bias=True),  # GLM-4.5
    "plain": dict(use_qk_norm=False, attention_bias=False),      # GLM-4.5-Air
}


def glm_switches(model, variant):
    layers = model.model.layers
    attn = [l.self_attn for l in layers]
    routers = [l.mlp.gate for l in layers if hasattr(l.mlp, "gate")]
    assert routers and len(routers) < len(layers)

    def full_rotary(m):
        cls = type(m.model.rotary_emb)
        old = m.model.rotary_emb
        cfg = type(m.config).from_dict(m.config.to_dict())
        cfg.rope_parameters = {**cfg.rope_parameters, "partial_rotary_factor": 1.0}
        m.model.rotary_emb = cls(config=cfg)
        assert m.model.rotary_emb.inv_freq.numel() == 2 * old.inv_freq.numel()
        return lambda: setattr(m.model, "rotary_emb", old)

    s = {"full rotary": full_rotary, "no selection bias": zero_selection_bias(routers),
         "no routed_scaling_factor": lambda m: set_attr(routers, "routed_scaling_factor", 1.0),
         "no group limit": lambda m: set_attr(routers, "topk_group", m.config.n_group)}
    if variant == "qk_norm_bias":
        s["no qk-norm"] = lambda m: set_attr(attn, "use_qk_norm", False)

        def no_qkv_bias(m):
            saved = [(a.q_proj.bias.clone(), a.k_proj.bias.clone()) for a in attn]
            for a in attn:
                a.q_proj.bias.zero_()
                a.k_proj.bias.zero_()
            return lambda: [(a.q_proj.bias.copy_(q), a.k_proj.bias.copy_(k))
                            for a, (q, k) in zip(attn, saved)]
        s["no q/k biases"] = no_qkv_bias
    return s


@pytest.mark.parametrize("variant", sorted(GLM_VARIANTS))
def test_glm4_moe_logits_match_transformers_fp32(variant, tmp_path):
    cfg = transformers.Glm4MoeConfig(**GLM, **GLM_VARIANTS[variant], **COMMON)
    model = random_fp32(cfg, tmp_path / "model", seed=1)
    assert model.model.layers[0].self_attn.use_qk_norm == (variant == "qk_norm_bias")
    inp, ref, rng = logits_vs_transformers(model, tmp_path / "model", 8, f"glm4_moe ({variant})",
                                           tmp_path)
    check_features_matter(model, inp, ref, rng, glm_switches(model, variant))


# OLMoE: q_norm [H] / k_norm [nkv * D] over the whole projections; 8 experts of 32, top-2,
# softmax router with norm_topk_prob as given.
OLMOE = dict(hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, num_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-5)


@pytest.mark.parametrize("norm_topk", [False, True])
def test_olmoe_logits_match_transformers_fp32(norm_topk, tmp_path):
    cfg = transformers.OlmoeConfig(**OLMOE, norm_topk_prob=norm_topk, **COMMON)
    model = random_fp32(cfg, tmp_path / "model", seed=2)
    attn = [l.self_attn for l in model.model.layers]
    assert attn[0].q_norm.weight.numel() == 64 and attn[0].k_norm.weight.numel() == 32
    inp, ref, rng = logits_vs_transformers(model, tmp_path / "model", 9,
                                           f"olmoe (norm_topk_prob {norm_topk})", tmp_path)

    class PerHead(torch.nn.Module):
        """The same weights applied per head (as Qwen3 / GLM do) instead of over the whole row."""
        def __init__(self, norm, head_dim):
            super().__init__()
            self.norm, self.d = norm, head_dim

        def forward(self, x):
            y = x.view(*x.shape[:-1], -1, self.d).float()
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.norm.variance_epsilon)
            return self.norm.weight * y.view(x.shape)

    def per_head(m):
        old = [(a.q_norm, a.k_norm) for a in attn]
        for a in attn:
            a.q_norm, a.k_norm = PerHead(a.q_norm, 16), PerHead(a.k_norm, 16)
        return lambda: [(setattr(a, "q_norm", q), setattr(a, "k_norm", k)) for a, (q, k) in zip(attn, old)]

    routers = [l.mlp.gate for l in model.model.layers]
    check_features_matter(model, inp, ref, rng, {
        "per-head q/k norms": per_head,
        "other norm_topk_prob": lambda m: set_attr(routers, "norm_topk_prob", not norm_topk)})


# ---- calibration against ModelOpt (bf16 models of tiny_models' weight recipe, CALIB_IDS: the
# 4 x 32 windows test_quantize_modelopt calibrates on) ----

def tiny_config(family: str):
    """Tiny configs of the families with every feature in play (DeepSeek V2/V3: q-LoRA, YaRN,
    groups; GLM: qk-norm, biases, partial rotary; OLMoE: whole-row q/k norms). K of every linear
    a multiple of 16."""
    common = dict(vocab_size=VOCAB, max_position_embeddings=256, tie_word_embeddings=False,
                  architectures=None)
    if family == "deepseek_v3":  # value heads of 16: o_proj's K = 4 x 16
        return transformers.DeepseekV3Config(**{**DEEPSEEK, "v_head_dim": 16},
                                             **DEEPSEEK_VARIANTS["qlora_yarn_groups"], **common,
                                             rms_norm_eps=1e-6)
    if family == "deepseek_v2":  # V2: q-LoRA, YaRN, group_limited_greedy
        return transformers.DeepseekV2Config(
            **{**DEEPSEEK_V2, "v_head_dim": 16},
            **DEEPSEEK_V2_VARIANTS["qlora_yarn_group_limited"], **common, rms_norm_eps=1e-6)
    if family == "glm4_moe":
        return transformers.Glm4MoeConfig(**GLM, **GLM_VARIANTS["qk_norm_bias"], **common)
    return transformers.OlmoeConfig(**OLMOE, norm_topk_prob=False, **common)


ARCH = {"deepseek_v2": "DeepseekV2ForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM", "glm4_moe": "Glm4MoeForCausalLM",
        "olmoe": "OlmoeForCausalLM"}


def save_tiny_bf16(family: str, path: Path) -> Path:
    """tiny_models.build's recipe (weights N(0, 0.05), biases and the selection bias N(0, 0.01),
    norms at their init) in bf16, saved."""
    cfg = tiny_config(family)
    cfg.architectures = [ARCH[family]]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.01)
    model.to(torch.bfloat16).eval().save_pretrained(path)
    return path


MUST_CALIBRATE = {
    "deepseek_v2": ["self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.kv_a_proj_with_mqa",
                    "self_attn.kv_b_proj", "self_attn.o_proj", "mlp.shared_experts.gate_proj",
                    "mlp.shared_experts.down_proj", "mlp.experts.*.gate_up", "mlp.gate_proj"],
    "deepseek_v3": ["self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.kv_a_proj_with_mqa",
                    "self_attn.kv_b_proj", "self_attn.o_proj", "mlp.shared_experts.gate_proj",
                    "mlp.shared_experts.down_proj", "mlp.experts.*.gate_up", "mlp.gate_proj"],
    "glm4_moe": ["self_attn.q_proj", "self_attn.o_proj", "mlp.shared_experts.up_proj",
                 "mlp.experts.*.down_proj", "mlp.down_proj"],
    "olmoe": ["self_attn.k_proj", "self_attn.o_proj", "mlp.experts.*.gate_up"],
}


@pytest.mark.parametrize("family", sorted(ARCH))
def test_input_amax_within_1_percent_of_modelopt(family, tmp_path):
    """Every input quantizer ModelOpt calibrates (MLA linears, shared experts, dense MLPs, routed
    experts grouped per layer as ModelOpt's fused experts share one amax) against fp4kit
    calibrate's input_amax on the same token ids: within 1%."""
    import modelopt.torch.quantization as mtq
    from test_calibrate_modelopt_experts import fp4kit_calibrate, group_key
    from test_quantize_modelopt import CALIB_IDS, modelopt_input_amax
    import collections

    src = save_tiny_bf16(family, tmp_path / "src")
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        model = mtq.quantize(model, mtq.NVFP4_DEFAULT_CFG, lambda m: m(CALIB_IDS))
    theirs = {m: a for m, a in modelopt_input_amax(model, family).items() if "lm_head" not in m}
    ours = {k[: -len(".input_amax")]: float(v) for k, v in fp4kit_calibrate(src, tmp_path).items()
            if k.endswith(".input_amax")}
    groups = collections.defaultdict(list)
    for m in theirs:
        groups[group_key(m)].append(m)
    worst = (0.0, "")
    for key, members in sorted(groups.items()):
        ref = max(theirs[m] for m in members)
        got = max(ours.get(m, 0.0) for m in members)
        assert ref > 0, key
        worst = max(worst, (abs(got - ref) / ref, key))
        assert abs(got - ref) <= 0.01 * ref, f"{family} {key}: fp4kit {got} vs ModelOpt {ref}"
    print(f"{family}: {len(groups)} groups, worst relative amax difference {worst[0]:.4%} "
          f"({worst[1]})")
    # The float32 forward of the same checkpoint gives every nn.Linear (MLA linears, shared
    # experts, dense MLPs) the input amax fp4kit records, to float rounding: the ModelOpt margin
    # above is bf16 rounding of its forward (largest at a shared expert's down_proj, whose input
    # silu(g) * u ModelOpt computes in bf16).
    f32 = transformers.AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float32, attn_implementation="eager").eval()
    seen = {}
    hooks = [mod.register_forward_hook(
        lambda mod, args, out, name=name: seen.__setitem__(
            name, max(seen.get(name, 0.0), float(args[0].abs().max()))))
        for name, mod in f32.named_modules()
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in name]
    with torch.no_grad():
        f32(CALIB_IDS)
    for h in hooks:
        h.remove()
    assert len(seen) >= 4 * tiny_config(family).num_hidden_layers
    for name, want in seen.items():
        assert abs(ours[name] - want) <= 1e-5 * want, f"{family} {name}: {ours[name]} vs fp32 {want}"
    layer_keys = {k.split(".", 3)[3] for k in groups}
    missing = [m for m in MUST_CALIBRATE[family] if m not in layer_keys]
    assert not missing, (missing, sorted(layer_keys))


@pytest.mark.parametrize("family", sorted(ARCH))
def test_calibrate_then_quantize_w4a4_equals_modelopt_export(family, tmp_path):
    """`fp4kit calibrate` + `fp4kit quantize --stats` (CPU scale form) against ModelOpt's W4A4
    NVFP4_DEFAULT_CFG export of the same bf16 model calibrated on the same ids: the same quantized
    modules, every weight, weight_scale and weight_scale_2 byte for byte, every input_scale within
    1% (fp4kit's amax is float32, ModelOpt's bf16)."""
    from test_calibrate_modelopt_experts import fp4kit_calibrate
    from test_quantize_modelopt import (fp4kit_quantize, get_run, qname, quantized_modules,
                                        read_tensors)

    src = save_tiny_bf16(family, tmp_path / "src")
    run = get_run(family, "w4a4", tmp_path / "runs", src=src)
    fp4kit_calibrate(src, tmp_path)
    out = fp4kit_quantize(src, tmp_path / "ours", ["--stats", tmp_path / "routed.safetensors"])
    ours, theirs = read_tensors(out), read_tensors(run.modelopt)
    q_ours, q_theirs = quantized_modules(ours), quantized_modules(theirs)
    assert q_theirs and q_ours == q_theirs, (sorted(q_ours ^ q_theirs))
    if family.startswith("deepseek"):
        assert any(m.endswith("self_attn.kv_b_proj") for m in q_theirs)
        assert any(m.endswith("mlp.shared_experts.down_proj") for m in q_theirs)
    worst = 0.0
    for m in sorted(q_theirs):
        for suffix in ("weight", "weight_scale", "weight_scale_2"):
            a, b = ours[qname(m, suffix)], theirs[qname(m, suffix)]
            assert a.dtype == b.dtype and a.shape == b.shape, (m, suffix)
            assert torch.equal(a.view(torch.uint8) if a.dtype != torch.float32 else a,
                               b.view(torch.uint8) if b.dtype != torch.float32 else b), (m, suffix)
        a, b = float(ours[qname(m, "input_scale")]), float(theirs[qname(m, "input_scale")])
        worst = max(worst, abs(a - b) / b)
        assert abs(a - b) <= 0.01 * b, f"{family} {m}: input_scale {a} vs ModelOpt {b}"
    print(f"{family}: {len(q_theirs)} modules, worst input_scale difference {worst:.4%}")

    # eval of that W4A4 output against its source: PPL, KLD and top-1 agreement, with the
    # activations NVFP4-quantized at every linear's input_scale (the default) or not.
    ids = tmp_path / "ids.u32"
    res = {}
    for label, extra in (("w4a4", []), ("weights", ["--no-act-quant"])):
        p = subprocess.run([fp4kit_bin(), "eval", str(out), "--base", str(src), "--data", str(ids),
                            "--ctx", "32", "--json", "--threads", "2", *extra],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        res[label] = json.loads(p.stdout)
    assert res["w4a4"]["activation_quantization"] and not res["weights"]["activation_quantization"]
    kld = {k: r["kl_divergence"]["kld"]["mean"]["value"] for k, r in res.items()}
    top1 = {k: r["kl_divergence"]["same_top_p"]["value"] for k, r in res.items()}
    print(f"{family} eval: KLD {kld}, top-1 agreement {top1}, "
          f"PPL {res['w4a4']['ppl']['value']:.4g} (base {res['w4a4']['ppl_base']['value']:.4g})")
    for k in res:
        assert res[k]["tokens_scored"] == 4 * 32 - 1 and np.isfinite(res[k]["ppl"]["value"])
        # near-uniform random models: top-1 agreement is far from 1 even for small KLD
        assert 0.0 < kld[k] < 0.1 and 0.3 < top1[k] < 1.0, (k, kld[k], top1[k])
    # quantizing the activations too adds error on top of the weights'
    assert kld["w4a4"] > 1.1 * kld["weights"], kld


def cast_fp8_block(src: Path, dst: Path, twin: Path, twin_bf16: Path) -> int:
    """The checkpoint as DeepSeek ships V3/R1: every linear weight of attention and MLP/experts
    (not the router, embeddings, norms, lm_head) as F8_E4M3 codes with an F32
    `<m>.weight_scale_inv` [ceil(N/128), ceil(K/128)] (block amax / 448), config.json's
    quantization_config {quant_method: fp8, weight_block_size: [128, 128]}; `twin`: the same
    model with those weights decoded by torch (codes x scale) as F32; `twin_bf16`: that decoding
    in bf16, the BF16 checkpoint DeepSeek's fp8_cast_bf16.py makes of its FP8 release. Returns how
    many weights were cast."""
    from safetensors.torch import load_file, save_file
    tensors = load_file(src / "model.safetensors")
    out, dec, cast = {}, {}, 0
    for name, t in tensors.items():
        m = name[: -len(".weight")]
        dec[name] = t
        out[name] = t
        if (name.endswith(".weight") and t.dim() == 2 and ".layers." in name
                and m.rsplit(".", 1)[-1] in ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa",
                                             "kv_b_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj")):
            w = t.float()
            n, k = w.shape
            gn, gk = -(-n // 128), -(-k // 128)
            pad = torch.zeros(gn * 128, gk * 128)
            pad[:n, :k] = w
            blocks = pad.view(gn, 128, gk, 128)
            scale = (blocks.abs().amax(dim=(1, 3)) / 448.0).clamp(min=1e-12)
            codes = (blocks / scale[:, None, :, None]).view(gn * 128, gk * 128)[:n, :k]
            out[name] = codes.to(torch.float8_e4m3fn)
            out[m + ".weight_scale_inv"] = scale.float().contiguous()
            full = scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[:n, :k]
            dec[name] = (out[name].float() * full).contiguous()
            cast += 1
    cfg = json.loads((src / "config.json").read_text())
    dec16 = {k: v.to(torch.bfloat16) if v.dtype == torch.float32 and k in out and
             out[k].dtype == torch.float8_e4m3fn else v for k, v in dec.items()}
    for d, ts in ((dst, out), (twin, dec), (twin_bf16, dec16)):
        d.mkdir()
        save_file(ts, d / "model.safetensors", metadata={"format": "pt"})
        (d / "config.json").write_text(json.dumps(cfg))
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                  "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    (dst / "config.json").write_text(json.dumps(cfg))
    return cast


def test_deepseek_fp8_block_source_calibrates_like_its_bf16_cast(tmp_path):
    """A DeepSeek-style FP8 checkpoint (every MLA, dense, shared and routed expert linear of the
    tiny DeepSeek-V3 in FP8 with 128 x 128 block scales), decoded layer by layer by the engine:
    its stats equal those of an F32 twin holding torch's decoding of the same codes and scales to
    float rounding (same routed-token counts), and those of the BF16 model cast from it (DeepSeek's
    fp8_cast_bf16.py) within 1% for every linear (routed experts per layer). Against the bf16 model the FP8 codes were made
    from, stats move by the FP8 rounding of the weights itself (e4m3 keeps 3 mantissa bits) and by
    the routing that moves with it: printed, not a property of the engine."""
    import collections
    from test_calibrate_modelopt_experts import fp4kit_calibrate, group_key

    src = save_tiny_bf16("deepseek_v3", tmp_path / "bf16")
    assert cast_fp8_block(src, tmp_path / "fp8", tmp_path / "twin", tmp_path / "cast16") > 50
    stats = {}
    for name, d in (("bf16", src), ("fp8", tmp_path / "fp8"), ("twin", tmp_path / "twin"),
                    ("cast16", tmp_path / "cast16")):
        (tmp_path / f"{name}_calib").mkdir()  # outputs never go inside an input checkpoint
        stats[name] = fp4kit_calibrate(d, tmp_path / f"{name}_calib")
    amax = sorted(k for k in stats["bf16"] if k.endswith(".input_amax"))
    for other in ("fp8", "twin", "cast16"):
        assert amax == sorted(k for k in stats[other] if k.endswith(".input_amax"))
    assert any("kv_b_proj" in k for k in amax) and any("shared_experts" in k for k in amax)
    for k in amax:
        a, t = float(stats["fp8"][k]), float(stats["twin"][k])
        assert abs(a - t) <= 1e-5 * t, f"{k}: FP8 source {a} vs decoded twin {t}"
    # Routed experts per layer and projection (what one NVFP4 input_scale covers, as ModelOpt's
    # fused experts): a single expert's amax depends on which tokens rounding routes to it.
    grouped = {}
    for name, st in stats.items():
        g = collections.defaultdict(float)
        for k in amax:
            key = group_key(k[: -len(".input_amax")])
            g[key] = max(g[key], float(st[k]))
        grouped[name] = g
    worst = {"twin": 0.0, "cast16": 0.0, "bf16": 0.0}
    for key, a in grouped["fp8"].items():
        for other in worst:
            b = grouped[other][key]
            worst[other] = max(worst[other], abs(a - b) / b)
        c = grouped["cast16"][key]
        assert abs(a - c) <= 0.01 * c, f"{key}: FP8 source {a} vs its BF16 cast {c}"
    for k in stats["twin"]:
        if k.endswith(".routed_tokens"):
            assert int(stats["fp8"][k]) == int(stats["twin"][k]), k
    print(f"FP8 source: {len(amax)} linears; worst amax difference vs decoded twin "
          f"{worst['twin']:.2e}, vs its BF16 cast {worst['cast16']:.3%}, vs the bf16 origin of "
          f"the codes {worst['bf16']:.3%}")
    assert worst["cast16"] > 0.0, "bf16 rounding changed nothing: the comparison is vacuous"
