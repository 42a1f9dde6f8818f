"""gpt-oss BMM expert layout as ModelOpt exports it (NVFP4-SPEC section 4, issue 8), pinned on CPU
so fp4kit's implementation has a fixed target: for `experts.gate_up_proj` [E, H, 2I] and
`experts.down_proj` [E, I, H] ModelOpt writes U8 [E, H/2, 2I] / [E, I/2, H], F8 block scales
[E, H/16, 2I] / [E, I/16, H] (blocks of 16 along the INPUT dim H resp. I), ONE scalar
weight_scale_2 per tensor for all experts, biases unchanged. Each expert's bytes are NVFP4 of the
expert's transpose ([2I, H], blocks along H) with that shared s2, transposed back: checked here
with fp4kit's codec (build/fp4kit-nvfp4) on the bytes ModelOpt exported.

CPU ModelOpt computes s2 = amax / 2688 (CPU form); the GPU golden (bit-exact with published
checkpoints) needs the GPU machine.
"""
import numpy as np
import pytest
import torch
from safetensors import safe_open

from test_codec_modelopt import fp4kit_encode, nvfp4_tool  # noqa: F401 (fixtures)

transformers = pytest.importorskip("transformers")
mtq = pytest.importorskip("modelopt.torch.quantization")
export = pytest.importorskip("modelopt.torch.export")

if not hasattr(transformers, "GptOssForCausalLM"):
    pytest.skip("this transformers has no gpt-oss", allow_module_level=True)


def tiny_gpt_oss():
    # H = 64 != 2I = 96: a transposed [E, 2I, H] layout cannot pass the shape checks.
    cfg = transformers.GptOssConfig(
        hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
        vocab_size=256, max_position_embeddings=256, sliding_window=16,
        layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=False,
        # ModelOpt's export fails on architectures None (the spec section 7 bug).
        architectures=["GptOssForCausalLM"])
    torch.manual_seed(0)
    return transformers.GptOssForCausalLM(cfg).to(torch.bfloat16).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_gpt_oss()
    source = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model = mtq.quantize(model, mtq.W4A16_NVFP4_CFG, lambda m: m(ids))
    out = tmp_path_factory.mktemp("gptoss")
    export.export_hf_checkpoint(model, export_dir=out)
    tensors = {}
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(f, "pt") as s:
            for k in s.keys():
                tensors[k] = s.get_tensor(k)
    return source, tensors


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("proj", ["gate_up_proj", "down_proj"])
def test_bmm_experts_are_per_expert_transposed_nvfp4_with_one_s2(exported, fp4kit_encode, layer, proj):
    source, out = exported
    p = f"model.layers.{layer}.mlp.experts.{proj}"
    w = source[p]  # [E, K, N]: K = input dim (H for gate_up, I for down)
    e_count, k, n = w.shape
    assert out[p].dtype == torch.uint8 and tuple(out[p].shape) == (e_count, k // 2, n)
    assert out[p + "_weight_scale"].dtype == torch.float8_e4m3fn
    assert tuple(out[p + "_weight_scale"].shape) == (e_count, k // 16, n)
    s2 = out[p + "_weight_scale_2"]
    assert s2.dtype == torch.float32 and s2.dim() == 0, "one scalar s2 for all experts"
    # s2 from the amax over ALL experts (CPU form amax / 2688).
    amax = np.float32(w.float().abs().max().item())
    assert np.float32(s2.item()) == amax / np.float32(2688.0)
    assert not any(x.startswith(p + ".") for x in out), "no per-expert keys"
    for e in range(e_count):
        mine = fp4kit_encode(w[e].t().contiguous(), "bf16", s2=np.float32(s2.item()))
        packed = np.frombuffer(mine.weight, np.uint8).reshape(n, k // 2).T
        scales = np.frombuffer(mine.weight_scale, np.uint8).reshape(n, k // 16).T
        np.testing.assert_array_equal(packed, out[p][e].numpy(), err_msg=f"{p} expert {e} weight")
        np.testing.assert_array_equal(
            scales, out[p + "_weight_scale"][e].view(torch.uint8).numpy(),
            err_msg=f"{p} expert {e} weight_scale")
    assert torch.equal(out[p + "_bias"], source[p + "_bias"]), "biases unchanged"


def test_router_and_attention_sinks_kept(exported):
    source, out = exported
    for k in ("model.layers.0.mlp.router.weight", "model.layers.0.mlp.router.bias",
              "model.layers.0.self_attn.sinks"):
        assert torch.equal(out[k], source[k]), k
