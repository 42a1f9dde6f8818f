"""Golden ModelOpt NVFP4 exports of tiny models, made on an NVIDIA GPU (GPU form of s2).

Run once on the GPU machine:  python3 python/golden/make_gpu_model_golden.py OUTDIR
For each family of python/tests/tiny_models.py that the installed transformers has, and each mode
(w4a16, w4a4): the bf16 source checkpoint, ModelOpt's calibrated input amax as an fp4kit stats file,
and ModelOpt's unified HF export. The results are committed under python/golden/models/ and
python/tests/test_quantize_gpu_golden.py requires fp4kit's default output to match them.
"""
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_models  # noqa: E402
from test_quantize_modelopt import CALIB_IDS, modelopt_input_amax, write_stats  # noqa: E402

import modelopt  # noqa: E402
import modelopt.torch.quantization as mtq  # noqa: E402
from modelopt.torch.export import export_hf_checkpoint  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def main():
    root = Path(sys.argv[1])
    assert torch.cuda.is_available(), "run this on the GPU machine"
    # Causal-LM families only (the goldens committed under python/golden/models/).
    for family in ("llama", "mixtral", "qwen3_moe", "qwen3_5_moe", "deepseek_v3", "gpt_oss",
                   "llama4"):
        try:
            src = tiny_models.save(family, root / family / "src")
        except (AttributeError, ImportError) as e:
            print(f"skip {family}: {e}")
            shutil.rmtree(root / family, ignore_errors=True)
            continue
        for mode in ("w4a16", "w4a4"):
            model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).cuda().eval()
            cfg = mtq.NVFP4_DEFAULT_CFG if mode == "w4a4" else mtq.W4A16_NVFP4_CFG
            with torch.no_grad():
                model = mtq.quantize(model, cfg, lambda m: m(CALIB_IDS.cuda()))
            out = root / family / mode
            out.mkdir(parents=True)
            if mode == "w4a4":
                write_stats(out / "stats.safetensors", modelopt_input_amax(model, family))
            with torch.no_grad():
                export_hf_checkpoint(model, export_dir=out / "modelopt")
            print(f"{family} {mode}: exported")
    (root / "PROVENANCE.txt").write_text(
        f"ModelOpt {modelopt.__version__}, torch {torch.__version__}, "
        f"{torch.cuda.get_device_name(0)}; python/golden/make_gpu_model_golden.py\n")


if __name__ == "__main__":
    main()
