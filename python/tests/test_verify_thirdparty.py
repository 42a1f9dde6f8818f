"""`fp4kit verify` on checkpoints fp4kit did not write: ModelOpt's own NVFP4 export (format A) and
compressed-tensors' converter output (format B), for every tiny model family and both modes, with
--source so every quantized tensor is also compared with the BF16 source. They must pass (exit 0,
no error finding); the warnings they may carry are listed in ALLOWED_WARNINGS with the reason.
The ModelOpt runs are shared with test_quantize_modelopt.py (same session cache).
"""
import json
import subprocess
from pathlib import Path

import pytest

from conftest import fp4kit_bin
from test_quantize_modelopt import (BMM_FAMILIES, FAMILIES, MODES, format_b, get_run,  # noqa: F401
                                    runs_root)

# Findings that a correct third-party checkpoint may carry, by check id.
ALLOWED_WARNINGS = {
    # ModelOpt quantizes Qwen3.5 linear_attn in_proj_qkv/in_proj_z/out_proj (spec section 7).
    "role.quantized",
    # compressed-tensors' ModelOpt converter keeps ModelOpt's 0-d global scales where
    # llm-compressor writes shape [1]; both load.
    "tensor.shape",
    # compressed-tensors >= 0.13 writes scale_dtype/zp_dtype, which older releases reject.
    "config.ct_compat",
}


def run_verify(ckpt: Path, src: Path, report: Path) -> dict:
    cmd = [str(fp4kit_bin()), "verify", str(ckpt), "--source", str(src), "--report", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    doc = json.loads(report.read_text()) if report.exists() else {}
    errors = [f for f in doc.get("findings", []) if f["severity"] == "error"]
    assert proc.returncode == 0 and not errors, (
        f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    warnings = {f["check"] for f in doc["findings"] if f["severity"] == "warning"}
    assert warnings <= ALLOWED_WARNINGS, f"unexpected warnings {warnings - ALLOWED_WARNINGS}"
    assert doc["counts"]["modules_quantized"] > 0
    assert len(doc["numeric"]["tensors"]) == doc["counts"]["modules_quantized"]
    return doc


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_verify_accepts_modelopt_export(runs_root, tmp_path, family, mode):  # noqa: F811
    run = get_run(family, mode, runs_root)
    doc = run_verify(run.modelopt, run.src, tmp_path / "report.json")
    assert doc["format"] == "modelopt"
    assert doc["weights_only"] == (mode == "w4a16")


@pytest.mark.parametrize("mode", ["w4a4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_verify_accepts_compressed_tensors_converter_output(runs_root, tmp_path, family, mode):  # noqa: F811
    from compressed_tensors.entrypoints.convert.convert_checkpoint import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4 import (
        ModelOptNvfp4Converter)
    if family in BMM_FAMILIES:
        pytest.skip(f"{family}: no compressed-tensors layout for 3-D BMM experts (fp4kit's refusal "
                    "of format B is checked in test_quantize_modelopt.py)")
    run = get_run(family, mode, runs_root)
    ignore = json.loads((format_b(run) / "config.json").read_text())["quantization_config"]["ignore"]
    converted = tmp_path / "converted"
    convert_checkpoint(run.modelopt, converted, ModelOptNvfp4Converter(ignore=ignore, targets=["Linear"]),
                       max_workers=1, device="cpu")
    doc = run_verify(converted, run.src, tmp_path / "report.json")
    assert doc["format"] == "compressed-tensors"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_verify_accepts_fp4kit_outputs(runs_root, tmp_path, family, mode):  # noqa: F811
    run = get_run(family, mode, runs_root)
    outputs = [("a", run.fp4kit_runs["default"])]
    if family not in BMM_FAMILIES:  # fp4kit refuses format B for them (test_quantize_modelopt.py)
        outputs.append(("b", format_b(run)))
    for label, out in outputs:
        run_verify(out, run.src, tmp_path / f"report-{label}.json")
