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
