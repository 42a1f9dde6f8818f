"""Writes the issue's benchmark model fast on a GPU machine: the tensors, stds and config of
`fp4kit-synth --layers 4 --hidden 2048 --heads 32 --kv-heads 4 --head-dim 128 --experts 128
--top-k 8 --moe-intermediate 768 --vocab 151936` (model/synthetic_checkpoint.cpp), drawn with
torch on the GPU instead of fp4kit-synth's single-threaded generator (random values differ; the
shapes, names, scales and config are the same). Usage: python3 bench/make_bench_model.py DIR
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

L, H, NH, NKV, HD, E, K, I, V = 4, 2048, 32, 4, 128, 128, 8, 768, 151936


def main():
    d = Path(sys.argv[1])
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    t = {}

    def normal(name, shape, sd=0.02):
        t[name] = (torch.randn(shape, generator=g, device="cuda") * sd).to(torch.bfloat16).cpu()

    def ones(name, n):
        t[name] = torch.ones(n, dtype=torch.bfloat16)

    normal("model.embed_tokens.weight", (V, H), 1.0)
    for l in range(L):
        p = f"model.layers.{l}."
        ones(p + "input_layernorm.weight", H)
        ones(p + "post_attention_layernorm.weight", H)
        normal(p + "self_attn.q_proj.weight", (NH * HD, H))
        normal(p + "self_attn.k_proj.weight", (NKV * HD, H))
        normal(p + "self_attn.v_proj.weight", (NKV * HD, H))
        normal(p + "self_attn.o_proj.weight", (H, NH * HD))
        ones(p + "self_attn.q_norm.weight", HD)
        ones(p + "self_attn.k_norm.weight", HD)
        normal(p + "mlp.gate.weight", (E, H))
        for e in range(E):
            x = f"{p}mlp.experts.{e}."
            sd = 0.02 * (1.0 + 0.1 * e)
            normal(x + "gate_proj.weight", (I, H), sd)
            normal(x + "up_proj.weight", (I, H), sd)
            normal(x + "down_proj.weight", (H, I), sd)
    ones("model.norm.weight", H)
    normal("lm_head.weight", (V, H), 0.1)
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": H,
           "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV,
           "head_dim": HD, "vocab_size": V, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
           "rope_theta": 1000000.0, "hidden_act": "silu", "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", "intermediate_size": I * 4, "moe_intermediate_size": I,
           "num_experts": E, "num_experts_per_tok": K, "norm_topk_prob": True,
           "decoder_sparse_step": 1, "mlp_only_layers": [], "attention_bias": False}
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))


if __name__ == "__main__":
    main()
