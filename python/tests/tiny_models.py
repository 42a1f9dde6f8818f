"""Tiny random Hugging Face models (transformers, CPU) of the families fp4kit supports, saved the way
transformers saves them, for the quantize conformance tests. Dimensions that become a linear's
input (K) are multiples of 16 so every linear NVFP4 wants is quantizable; a few layers, a few
experts, seconds to build and to run ModelOpt on.
"""
import torch
import transformers

COMMON = dict(vocab_size=256, max_position_embeddings=256, rms_norm_eps=1e-6,
              tie_word_embeddings=False)


def llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, **COMMON))


def mixtral():
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(
        hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, **COMMON))


def qwen3_moe():
    return transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_experts=4,
        num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, norm_topk_prob=True, **COMMON))


def qwen3_5_moe():
    """Text-only Qwen3.5-MoE: linear-attention (GatedDeltaNet) and full-attention layers, routed
    experts, a shared expert with its sigmoid gate."""
    return transformers.Qwen3_5MoeForCausalLM(transformers.Qwen3_5MoeTextConfig(
        hidden_size=64, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
        linear_value_head_dim=16, linear_conv_kernel_dim=4, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2, **COMMON))


def qwen3_next():
    """Qwen3-Next: Gated DeltaNet with the fused in_proj_qkvz / in_proj_ba projections, gated
    full attention, routed experts stored per expert, a gated shared expert. Not in FAMILIES
    (whose every entry test_quantize_modelopt runs ModelOpt on): test_gguf_families.py adds it."""
    return transformers.Qwen3NextForCausalLM(transformers.Qwen3NextConfig(
        hidden_size=64, num_hidden_layers=3,
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
        linear_value_head_dim=16, linear_conv_kernel_dim=4, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
        norm_topk_prob=True, **COMMON))


def qwen3_5_moe_vl():
    """The multimodal wrapper real Qwen3.5/3.6-MoE checkpoints use: text under
    model.language_model., a (tiny) vision tower under model.visual. that stays unquantized."""
    text = qwen3_5_moe().config.to_dict()
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  num_position_embeddings=64)
    return transformers.Qwen3_5MoeForConditionalGeneration(transformers.Qwen3_5MoeConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=False))


def deepseek_v3():
    """DeepSeek-V3 MLA with q-LoRA, one dense first layer, routed + shared experts, grouped routing
    with e_score_correction_bias."""
    return transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(
        hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
        first_k_dense_replace=1, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
        n_group=2, topk_group=1, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32,
        kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=16, **COMMON))


def gpt_oss(intermediate_size: int = 48):
    """gpt-oss: BMM experts [E, H, 2I] with gate/up interleaved in columns and biases, a router
    with bias, attention sinks, sliding and full attention. H = 64 != 2I = 96, so [E, H, 2I] and
    its transpose cannot be confused; I = 48 is a multiple of 16 (down_proj's K). MXFP4 sources
    need K a multiple of 32: test_mxfp4_source.py passes intermediate_size=96."""
    return transformers.GptOssForCausalLM(transformers.GptOssConfig(
        hidden_size=64, intermediate_size=intermediate_size, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
        sliding_window=16, layer_types=["sliding_attention", "full_attention"],
        # ModelOpt's export fails on architectures None (spec section 7).
        architectures=["GptOssForCausalLM"], **COMMON))


def llama4():
    """Text-only Llama-4 (Llama4ForCausalLM, model_type llama4_text): layer 0 dense
    (intermediate_size_mlp), layer 1 MoE with BMM experts [E, H, 2I] (gate = first I columns),
    a sigmoid top-k router and a shared expert. H = 64 != 2I = 96; I = 48 and 80 are multiples
    of 16."""
    return transformers.Llama4ForCausalLM(transformers.Llama4TextConfig(
        hidden_size=64, intermediate_size=48, intermediate_size_mlp=80, num_hidden_layers=2,
        interleave_moe_layer_step=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_local_experts=4, num_experts_per_tok=1, attention_chunk_size=16,
        architectures=["Llama4ForCausalLM"], **COMMON))


def llama4_vl():
    """The multimodal wrapper real Llama-4 checkpoints (Scout, Maverick) use:
    Llama4ForConditionalGeneration, text under language_model.model., a (tiny) vision tower under
    vision_model. and multi_modal_projector. that stay unquantized."""
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  image_size=32, patch_size=16, projector_input_dim=64, projector_output_dim=64,
                  vision_output_dim=64, pixel_shuffle_ratio=0.5)
    return transformers.Llama4ForConditionalGeneration(transformers.Llama4Config(
        text_config=llama4().config.to_dict(), vision_config=vision,
        architectures=["Llama4ForConditionalGeneration"], tie_word_embeddings=False))


FAMILIES = {
    "llama": llama,
    "mixtral": mixtral,
    "qwen3_moe": qwen3_moe,
    "qwen3_5_moe": qwen3_5_moe,
    "qwen3_5_moe_vl": qwen3_5_moe_vl,
    "deepseek_v3": deepseek_v3,
    "gpt_oss": gpt_oss,
    "llama4": llama4,
    "llama4_vl": llama4_vl,
}


def build(family: str, seed: int = 0, **dims):
    """The model in bf16 with deterministic random weights. Weights are re-drawn with a wider
    spread than the default init so blocks use the whole FP4 range, and biases, gpt-oss's
    attention sinks and the MoE routers' bias (DeepSeek) are non-zero."""
    torch.manual_seed(seed)
    model = FAMILIES[family](**dims)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif name.endswith((".bias", ".sinks")):  # gpt-oss: zero by default, kept as is
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.01)
    return model.to(torch.bfloat16).eval()


def save(family: str, path, seed: int = 0, **dims):
    model = build(family, seed, **dims)
    model.save_pretrained(path)
    return path


# Kimi's choice for its INT4 checkpoints: the routed experts only (the rest stays BF16, "ignore").
ROUTED_EXPERTS = r".*\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$"


def pack_quantized(tensors: dict, pattern: str = ROUTED_EXPERTS, bits: int = 4,
                   strategy: str = "group", group: int = 32):
    """`tensors` with every 2-D weight matching `pattern` stored as compressed-tensors
    pack-quantized integers, made by compressed-tensors itself (scales from calculate_qparams, the
    integers quantized and packed by PackedQuantizationCompressor.compress).
    Returns (tensors, quantization_config dict as ModelCompressor writes it, reference) where
    reference[module] = (the package's float32 decompression, its default (scale dtype)
    decompression)."""
    import re
    import tempfile
    from compressed_tensors.compressors.model_compressors.model_compressor import ModelCompressor
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig,
                                                 QuantizationScheme)
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    args = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy=strategy,
                            group_size=group if strategy == "group" else None)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    match = re.compile(pattern)
    out, ref, ignore = {}, {}, []
    for name, w in tensors.items():
        if not match.match(name):
            out[name] = w
            if name.endswith(".weight") and w.dim() == 2 and "norm" not in name:
                ignore.append(name[: -len(".weight")])
            continue
        m = name[: -len(".weight")]
        n, k = w.shape
        wf = w.float()
        if strategy == "group":
            grouped = wf.reshape(n, k // group, group)
            lo, hi = grouped.amin(-1), grouped.amax(-1)
        else:
            lo, hi = wf.amin(-1, keepdim=True), wf.amax(-1, keepdim=True)
        scale, zp = calculate_qparams(lo, hi, args)
        comp = PackedQuantizationCompressor.compress(
            {"weight": w, "weight_scale": scale.to(w.dtype), "weight_zero_point": zp}, scheme)
        for key, v in comp.items():
            out[f"{m}.{key}"] = v
        f32 = PackedQuantizationCompressor.decompress(
            {**comp, "weight_scale": comp["weight_scale"].float()}, scheme)["weight"]
        default = PackedQuantizationCompressor.decompress(dict(comp), scheme)["weight"]
        ref[m] = (f32, default)
    qc = QuantizationConfig(config_groups={"group_0": scheme}, format="pack-quantized",
                            ignore=sorted(ignore))
    with tempfile.TemporaryDirectory() as d:  # the package writes the config block itself
        import json
        import os
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({}, f)
        ModelCompressor(quantization_config=qc).update_config(d)
        with open(os.path.join(d, "config.json")) as f:
            config = json.load(f)["quantization_config"]
    return out, config, ref


def kimi_k25(path, seed: int = 0):
    """A tiny Kimi-K2.5-shaped checkpoint as Moonshot publishes it: the KimiK25ForConditionalGeneration
    wrapper (model_type kimi_k25) around a kimi_k2 (DeepSeek-V3) text_config carrying the
    compressed-tensors INT4 quantization_config; the text model under language_model.model. and
    language_model.lm_head with its routed experts pack-quantized (INT4, BF16 scale per 32,
    symmetric), a (tiny, random) MoonViT vision tower under vision_tower. and the projector under
    mm_projector. in BF16. Returns pack_quantized's reference values (module names as stored)."""
    import json
    from pathlib import Path
    from safetensors.torch import save_file

    import tempfile
    from safetensors.torch import load_file

    path = Path(path)
    model = build("deepseek_v3", seed)
    with tempfile.TemporaryDirectory() as d:  # the names transformers saves (experts one by one)
        model.save_pretrained(d)
        saved = load_file(str(Path(d) / "model.safetensors"))
    tensors = {("language_model." + k): v for k, v in saved.items()}
    g = torch.Generator().manual_seed(seed + 1)
    vision = {  # MoonViT's names (patch embed, one encoder block, final norm) and the projector
        "vision_tower.patch_embed.proj.weight": (32, 3, 14, 14),
        "vision_tower.patch_embed.proj.bias": (32,),
        "vision_tower.encoder.blocks.0.norm0.weight": (32,),
        "vision_tower.encoder.blocks.0.wqkv.weight": (96, 32),
        "vision_tower.encoder.blocks.0.wo.weight": (32, 32),
        "vision_tower.encoder.blocks.0.norm1.weight": (32,),
        "vision_tower.encoder.blocks.0.mlp.fc0.weight": (64, 32),
        "vision_tower.encoder.blocks.0.mlp.fc1.weight": (32, 64),
        "vision_tower.encoder.final_layernorm.weight": (32,),
        "mm_projector.pre_norm.weight": (128,),
        "mm_projector.proj.0.weight": (128, 128),
        "mm_projector.proj.2.weight": (64, 128),
    }
    for k, shape in vision.items():
        tensors[k] = (torch.randn(shape, generator=g) * 0.05).to(torch.bfloat16)
    packed, qconfig, ref = pack_quantized(tensors)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in packed.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    text = model.config.to_dict()
    text.update(model_type="kimi_k2", architectures=["DeepseekV3ForCausalLM"],
                quantization_config=qconfig)
    for k in ("dtype", "torch_dtype", "transformers_version", "_name_or_path"):
        text.pop(k, None)
    config = {"architectures": ["KimiK25ForConditionalGeneration"], "model_type": "kimi_k25",
              "auto_map": {"AutoConfig": "configuration_kimi_k25.KimiK25Config",
                           "AutoModel": "modeling_kimi_k25.KimiK25ForConditionalGeneration"},
              "media_placeholder_token_id": 255, "tie_word_embeddings": False,
              "text_config": text,
              "vision_config": {"model_type": "moonvit3d", "hidden_size": 32, "patch_size": 14,
                                "num_hidden_layers": 1, "num_attention_heads": 2,
                                "intermediate_size": 64, "merge_kernel_size": [2, 2],
                                "mm_hidden_size": 32, "text_hidden_size": 64}}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return ref
