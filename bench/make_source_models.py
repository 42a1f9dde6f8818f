"""Source models for the GPU kernels' checks and timings (bench/cuda_kernels_device_run.sh), written
on a GPU machine with torch (random weights drawn on the GPU):
  qwen3_next       Qwen3-Next: Gated DeltaNet layers (grouped in_proj_qkvz / in_proj_ba) + gated
                   attention + MoE with a shared expert, bf16
  deepseek_v3_fp8  DeepSeek-V3 with its linears FP8 E4M3 block-scaled as DeepSeek ships them
                   (weight_scale_inv [ceil(n/128), ceil(k/128)] F32, amax/448 per 128 x 128 block)
  gpt_oss_mxfp4    gpt-oss with its BMM experts MXFP4 (<name>_blocks [E, N, K/32, 16] + E8M0
                   <name>_scales [E, N, K/32]): random codes, scales 2^-8 .. 2^-4 (the CPU and GPU
                   engines are compared on these bytes, so they need not encode a bf16 model)
SIZE tiny: the dimensions of python/tests (the family check), bench: a layer the size of the real
models' (hidden 2048, 32 value heads of 128 / 128-wide FP8 blocks), 4 layers, vocabulary 32768.
Usage: python3 make_source_models.py KIND SIZE DIR [--tiny python/tests]
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

DEV = "cuda" if torch.cuda.is_available() else "cpu"
LINEARS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "q_proj", "k_proj",
           "v_proj", "gate_proj", "up_proj", "down_proj")


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.empty_like(p).uniform_(0.5, 2.0, generator=gen).log())
            elif "conv1d" in name:
                p.copy_(0.4 * torch.randn(p.shape, generator=gen, device=p.device))
            elif p.dim() >= 2:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen, device=p.device))
            elif name.endswith(".bias") or name.endswith(".sinks"):
                p.copy_(0.01 * torch.randn(p.shape, generator=gen, device=p.device))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.01 * torch.randn(b.shape, generator=gen, device=b.device))


def build(cls, cfg, path: Path):
    torch.manual_seed(0)
    gen = torch.Generator(device=DEV).manual_seed(0)
    with torch.device(DEV):
        model = cls(cfg).to(torch.bfloat16)
    randomize(model, gen)
    model.eval().cpu().save_pretrained(path)


def rewrite(path: Path, convert, quant_config):
    """Applies convert(tensors) to every shard of `path` and adds quantization_config."""
    files = sorted(path.glob("*.safetensors"))
    weight_map = {}
    for f in files:
        t = convert(load_file(str(f)))
        save_file(t, str(f), metadata={"format": "pt"})
        weight_map.update({k: f.name for k in t})
    if len(files) > 1:
        idx = json.loads((path / "model.safetensors.index.json").read_text())
        idx["weight_map"] = weight_map
        (path / "model.safetensors.index.json").write_text(json.dumps(idx, indent=2))
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"] = quant_config
    (path / "config.json").write_text(json.dumps(cfg, indent=2))


def fp8_blocks(t):
    out = {}
    for name, w in t.items():
        mod = name[: -len(".weight")]
        if not (name.endswith(".weight") and w.dim() == 2 and mod.split(".")[-1] in LINEARS):
            out[name] = w
            continue
        n, k = w.shape
        gn, gk = -(-n // 128), -(-k // 128)
        x = torch.zeros(gn * 128, gk * 128, device=DEV)
        x[:n, :k] = w.to(DEV).float()
        blocks = x.reshape(gn, 128, gk, 128)
        scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / 448.0  # [gn, gk]
        q = (blocks / scale[:, None, :, None]).reshape(gn * 128, gk * 128)[:n, :k]
        out[name] = q.to(torch.float8_e4m3fn).cpu()
        out[name + "_scale_inv"] = scale.cpu().contiguous()
    return out


def mxfp4_experts(t):
    out = {}
    gen = torch.Generator().manual_seed(1)
    for name, w in t.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")) and w.dim() == 3:
            e, k, n = w.shape  # [E, K, N]; MXFP4 stores [E, N, K/32, 16]
            out[name + "_blocks"] = torch.randint(0, 256, (e, n, k // 32, 16), generator=gen,
                                                  dtype=torch.uint8)
            out[name + "_scales"] = torch.randint(119, 124, (e, n, k // 32), generator=gen,
                                                  dtype=torch.uint8)
        else:
            out[name] = w
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["qwen3_next", "deepseek_v3_fp8", "gpt_oss_mxfp4"])
    ap.add_argument("size", choices=["tiny", "bench"])
    ap.add_argument("dir")
    ap.add_argument("--tiny", default=str(Path(__file__).resolve().parent.parent / "python" / "tests"))
    a = ap.parse_args()
    import transformers
    path = Path(a.dir)
    tiny = a.size == "tiny"
    if a.kind == "qwen3_next":
        dims = dict(vocab_size=256, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                    linear_key_head_dim=16, linear_value_head_dim=16, moe_intermediate_size=32,
                    shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                    intermediate_size=48) if tiny else dict(
                    vocab_size=32768, hidden_size=2048, num_attention_heads=16,
                    num_key_value_heads=2, head_dim=256, linear_num_key_heads=16,
                    linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128,
                    moe_intermediate_size=512, shared_expert_intermediate_size=512, num_experts=32,
                    num_experts_per_tok=8, intermediate_size=5120)
        cfg = transformers.Qwen3NextConfig(
            num_hidden_layers=4, layer_types=["linear_attention"] * 3 + ["full_attention"],
            linear_conv_kernel_dim=4, max_position_embeddings=4096, rms_norm_eps=1e-6,
            tie_word_embeddings=False, **dims)
        build(transformers.Qwen3NextForCausalLM, cfg, path)
    elif a.kind == "deepseek_v3_fp8":
        dims = dict(vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                    n_routed_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1,
                    num_attention_heads=4, q_lora_rank=32, kv_lora_rank=32, qk_rope_head_dim=16,
                    qk_nope_head_dim=16, v_head_dim=16) if tiny else dict(
                    vocab_size=32768, hidden_size=2048, intermediate_size=4096,
                    moe_intermediate_size=512, n_routed_experts=32, num_experts_per_tok=4,
                    n_group=4, topk_group=2, num_attention_heads=16, q_lora_rank=768,
                    kv_lora_rank=256, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128)
        cfg = transformers.DeepseekV3Config(
            num_hidden_layers=4, first_k_dense_replace=1, n_shared_experts=1,
            num_key_value_heads=dims["num_attention_heads"], max_position_embeddings=4096,
            rms_norm_eps=1e-6, tie_word_embeddings=False, **dims)
        build(transformers.DeepseekV3ForCausalLM, cfg, path)
        rewrite(path, fp8_blocks, {"quant_method": "fp8", "fmt": "e4m3",
                                   "activation_scheme": "dynamic", "weight_block_size": [128, 128]})
    else:
        sys.path.insert(0, a.tiny)
        import tiny_models
        tiny_models.build("gpt_oss", intermediate_size=96).save_pretrained(path)
        rewrite(path, mxfp4_experts, {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
            "lm_head"]})


if __name__ == "__main__":
    main()
