"""fp4kit quantize (default: GPU form of s2) against ModelOpt's NVFP4 export made on an H100.

python/golden/models/<family>/ holds a tiny bf16 model (src/, tiny_models.py, seed 0) and, per mode,
ModelOpt 0.47's unified HF export made on the GPU (<mode>/modelopt/) plus, for W4A4, ModelOpt's
calibrated input amax as an fp4kit stats file (<mode>/stats.safetensors); produced by
python/golden/make_gpu_model_golden.py (PROVENANCE.txt). This is how published checkpoints are made;
here fp4kit, with no scale-form option, must give the same bytes for every quantized tensor and the
same set of quantized modules (apart from the DELIBERATE differences of test_quantize_modelopt.py).
"""
import subprocess
from pathlib import Path

import pytest

from conftest import fp4kit_bin, require_executable
from test_quantize_modelopt import check_same_quantized_tensors, quantized_modules, read_tensors

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "models"
FAMILIES = sorted(p.name for p in GOLDEN.iterdir() if (p / "src").is_dir())


def test_golden_models_present():
    assert {"llama", "mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss", "llama4"} <= set(FAMILIES)


@pytest.mark.parametrize("mode", ["w4a16", "w4a4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_default_output_identical_to_modelopt_on_gpu(family, mode, tmp_path):
    src, gold = GOLDEN / family / "src", GOLDEN / family / mode
    out = tmp_path / "out"
    cmd = [require_executable(fp4kit_bin()), "quantize", src, out]
    cmd += ["--weights-only"] if mode == "w4a16" else ["--stats", gold / "stats.safetensors"]
    if family == "qwen3_5_moe":
        cmd.append("--quantize-linear-attn")  # ModelOpt quantizes linear attention; fp4kit on request
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ours, theirs = read_tensors(out), read_tensors(gold / "modelopt")
    q_ours, q_theirs = quantized_modules(ours), quantized_modules(theirs)
    assert q_theirs, "the golden export quantized nothing"
    assert q_ours == q_theirs, (f"only fp4kit: {sorted(q_ours - q_theirs)}; "
                                f"only ModelOpt: {sorted(q_theirs - q_ours)}")
    check_same_quantized_tensors(ours, theirs, q_theirs, f"{family} {mode} (GPU golden)")
