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


def deepseek_switches(model, variant):
    layers = model.model.layers
    attn = [l.self_attn for l in layers]
    routers = [l.mlp.gate for l in layers if hasattr(l.mlp, "gate")]
    assert routers and len(routers) < len(layers), "needs dense and MoE layers"

    def zero_bias(m):
        saved = [r.e_score_correction_bias.clone() for r in routers]
        for r in routers:
            r.e_score_correction_bias.zero_()
        return lambda: [r.e_score_correction_bias.copy_(s) for r, s in zip(routers, saved)]

    def flip_rope_pairing(m):
        return set_attr([m.config], "rope_interleave", not m.config.rope_interleave)

    s = {"no selection bias": zero_bias,
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
    binary = fp4kit_bin()
    cfg = transformers.DeepseekV3Config(**DEEPSEEK, **DEEPSEEK_VARIANTS[variant], **COMMON,
                                        rms_norm_eps=1e-6)
    model = random_fp32(cfg, tmp_path / "model")
    assert (model.config.q_lora_rank is None) == (variant == "q_proj")
    ids = ids_for()
    inp = torch.tensor(ids[:-1].astype(np.int64))[None]
    with torch.no_grad():
        ref = model(inp).logits[0].numpy()
    got = fp4kit_logits(binary, tmp_path / "model", ids, tmp_path)
    rng = assert_logits_match(got, ref, f"deepseek_v3 ({variant})")
    check_features_matter(model, inp, ref, rng, deepseek_switches(model, variant))


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

    def zero_bias(m):
        saved = [r.e_score_correction_bias.clone() for r in routers]
        for r in routers:
            r.e_score_correction_bias.zero_()
        return lambda: [r.e_score_correction_bias.copy_(s) for r, s in zip(routers, saved)]

    s = {"full rotary": full_rotary, "no selection bias": zero_bias,
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
    binary = fp4kit_bin()
    cfg = transformers.Glm4MoeConfig(**GLM, **GLM_VARIANTS[variant], **COMMON)
    model = random_fp32(cfg, tmp_path / "model", seed=1)
    assert model.model.layers[0].self_attn.use_qk_norm == (variant == "qk_norm_bias")
    ids = ids_for(8)
    inp = torch.tensor(ids[:-1].astype(np.int64))[None]
    with torch.no_grad():
        ref = model(inp).logits[0].numpy()
    got = fp4kit_logits(binary, tmp_path / "model", ids, tmp_path)
    rng = assert_logits_match(got, ref, f"glm4_moe ({variant})")
    check_features_matter(model, inp, ref, rng, glm_switches(model, variant))


# OLMoE: q_norm [H] / k_norm [nkv * D] over the whole projections; 8 experts of 32, top-2,
# softmax router with norm_topk_prob as given.
OLMOE = dict(hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, num_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-5)


@pytest.mark.parametrize("norm_topk", [False, True])
def test_olmoe_logits_match_transformers_fp32(norm_topk, tmp_path):
    binary = fp4kit_bin()
    cfg = transformers.OlmoeConfig(**OLMOE, norm_topk_prob=norm_topk, **COMMON)
    model = random_fp32(cfg, tmp_path / "model", seed=2)
    attn = [l.self_attn for l in model.model.layers]
    assert attn[0].q_norm.weight.numel() == 64 and attn[0].k_norm.weight.numel() == 32
    ids = ids_for(9)
    inp = torch.tensor(ids[:-1].astype(np.int64))[None]
    with torch.no_grad():
        ref = model(inp).logits[0].numpy()
    got = fp4kit_logits(binary, tmp_path / "model", ids, tmp_path)
    rng = assert_logits_match(got, ref, f"olmoe (norm_topk_prob {norm_topk})")

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
