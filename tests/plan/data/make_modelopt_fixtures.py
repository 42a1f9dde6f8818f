"""Regenerates modelopt_<family>.json: what NVIDIA ModelOpt (an independent implementation) does
with tiny random transformers models of every family fp4kit's planner knows.

Run with the conformance venv (python/requirements.txt: transformers 5.23, nvidia-modelopt 0.47),
CPU only, about a minute:
    python tests/plan/data/make_modelopt_fixtures.py tests/plan/data

Each fixture holds the model's config.json and tensor list exactly as transformers saves them
(names, dtypes, shapes: the planner's input), and from ModelOpt's NVFP4_DEFAULT_CFG export: the
quantized modules, hf_quant_config's exclude_modules, and every weight_scale_2 / input_scale value.
tests/plan/modelopt_fixture_test.cpp compares fp4kit's plan with them.
"""
import glob
import json
import os
import struct
import sys
import tempfile
import warnings

import numpy as np
import torch
import transformers as T

warnings.filterwarnings("ignore")
import modelopt.torch.quantization as mtq  # noqa: E402
from modelopt.torch.export import export_hf_checkpoint  # noqa: E402

C = dict(vocab_size=256, max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False)
A = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
LIN = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
           linear_value_head_dim=16, layer_types=["linear_attention", "full_attention"])
FAMILIES = {
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(intermediate_size=128, **A, **C)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(intermediate_size=128, **A, **C)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(intermediate_size=128, **A, **C)),
    "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(intermediate_size=128, head_dim=16, **A, **C)),
    "qwen2_moe": lambda: T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(
        intermediate_size=128, moe_intermediate_size=32, shared_expert_intermediate_size=32,
        num_experts=4, num_experts_per_tok=2, **A, **C)),
    "qwen3_moe": lambda: T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(
        intermediate_size=128, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
        head_dim=16, **A, **C)),
    "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(
        intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, **A, **C)),
    "olmoe": lambda: T.OlmoeForCausalLM(T.OlmoeConfig(
        intermediate_size=32, num_experts=4, num_experts_per_tok=2, **A, **C)),
    "glm4_moe": lambda: T.Glm4MoeForCausalLM(T.Glm4MoeConfig(
        intermediate_size=128, moe_intermediate_size=32, n_routed_experts=4, n_shared_experts=1,
        num_experts_per_tok=2, first_k_dense_replace=1, n_group=1, topk_group=1, head_dim=16,
        **A, **C)),
    "deepseek_v3": lambda: T.DeepseekV3ForCausalLM(T.DeepseekV3Config(
        intermediate_size=128, moe_intermediate_size=32, first_k_dense_replace=1,
        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
        q_lora_rank=32, kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=16,
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, **C)),
    "qwen3_next": lambda: T.Qwen3NextForCausalLM(T.Qwen3NextConfig(
        intermediate_size=128, moe_intermediate_size=32, shared_expert_intermediate_size=32,
        num_experts=4, num_experts_per_tok=2, head_dim=16, **LIN, **A, **C)),
    "qwen3_5_moe": lambda: T.Qwen3_5MoeForCausalLM(T.Qwen3_5MoeTextConfig(
        head_dim=16, linear_conv_kernel_dim=4, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2, **LIN, **A, **C)),
}


def headers(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            h = json.loads(fh.read(n))
            base = 8 + n
            for k, v in h.items():
                if k == "__metadata__":
                    continue
                v = dict(v)
                if v["dtype"] == "F32" and v["shape"] in ([], [1]):
                    fh.seek(base + v["data_offsets"][0])
                    v["value"] = float(np.frombuffer(fh.read(4), "<f4")[0])
                out[k] = v
    return out


def fixture(family, tmp):
    torch.manual_seed(0)
    model = FAMILIES[family]().to(torch.bfloat16).eval()
    src = os.path.join(tmp, family + "-src")
    model.save_pretrained(src)
    model = T.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))

    def loop(m):
        with torch.no_grad():
            m(ids)

    mtq.quantize(model, mtq.NVFP4_DEFAULT_CFG, loop)
    out = os.path.join(tmp, family + "-nvfp4")
    export_hf_checkpoint(model, export_dir=out)
    src_h, out_h = headers(src), headers(out)
    quantized = sorted(k[: -len(".weight_scale_2")] for k in out_h if k.endswith(".weight_scale_2"))
    return {
        "family": family,
        "generator": f"transformers {T.__version__}, tiny random model, NVFP4_DEFAULT_CFG export",
        "config": json.load(open(os.path.join(src, "config.json"))),
        "tensors": [[k, v["dtype"], v["shape"]] for k, v in sorted(src_h.items())],
        "modelopt": {
            "quantized": quantized,
            "exclude_modules": json.load(open(os.path.join(out, "hf_quant_config.json")))
            ["quantization"]["exclude_modules"],
            "weight_scale_2": {m: out_h[m + ".weight_scale_2"]["value"] for m in quantized},
            "input_scale": {m: out_h[m + ".input_scale"]["value"] for m in quantized},
        },
    }


def main():
    dest = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            data = fixture(family, tmp)
            with open(os.path.join(dest, f"modelopt_{family}.json"), "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")
            print(family, len(data["modelopt"]["quantized"]), "quantized")


if __name__ == "__main__":
    main()
