"""compressed-tensors pack-quantized INT4/INT8 sources (how Kimi-K2 Thinking and Kimi-K2.5 ship
their routed experts: weight_packed I32, a BF16 weight_scale per 32 columns, weight_shape;
symmetric) against the real compressed-tensors package.

The checkpoints are made by compressed-tensors itself: scales from its calculate_qparams, the
integers quantized and packed by PackedQuantizationCompressor.compress, config.json's
quantization_config written by ModelCompressor.update_config. The reference values are the
package's own decompression (PackedQuantizationCompressor.decompress):
  - in float32 (scales widened first): fp4kit's decode must equal it bit for bit (q * scale is
    exact in float32: |q| <= 128 and a BF16 scale has 8 significant bits);
  - as the package runs by default (in the scale's dtype, BF16): equal to fp4kit's float32 decode
    rounded to BF16 (one correctly rounded product).
quantize from the INT source must give the bytes quantize gives from the float32-decompressed
model; calibrate the same statistics; verify --source compares the decoded values.
"""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fp4kit_bin, require_executable, tool_path
import tiny_models

pytest.importorskip("compressed_tensors")
from safetensors.torch import load_file, save_file  # noqa: E402


def compress_checkpoint(src: Path, dst: Path, bits: int, strategy: str, group: int = 32) -> dict:
    """`src` with its routed experts stored pack-quantized by compressed-tensors (tiny_models.
    pack_quantized). Returns {module: (float32 decompression, default (BF16) decompression)}."""
    tensors, qconfig, ref = tiny_models.pack_quantized(
        load_file(str(src / "model.safetensors")), bits=bits, strategy=strategy, group=group)
    for m in ref:
        assert tensors[m + ".weight_packed"].dtype == torch.int32
        assert m + ".weight_zero_point" not in tensors
    dst.mkdir(parents=True)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = qconfig
    (dst / "config.json").write_text(json.dumps(config))
    return ref


def float32_twin(src: Path, ref: dict, dst: Path) -> Path:
    """The model compressed-tensors decompresses (float32 experts, the rest as in `src`)."""
    tensors = load_file(str(src / "model.safetensors"))
    for m, (f32, _) in ref.items():
        for part in ("weight_packed", "weight_scale", "weight_shape"):
            del tensors[f"{m}.{part}"]
        tensors[m + ".weight"] = f32.contiguous()
    dst.mkdir(parents=True)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    c = json.loads((src / "config.json").read_text())
    del c["quantization_config"]
    (dst / "config.json").write_text(json.dumps(c))
    return dst


def calibrate_each(dirs: dict, tmp_path: Path, seed: int) -> dict:
    """fp4kit calibrate (CPU, one window of 32 random ids) on each checkpoint of `dirs`; its stats
    file is tmp_path/<name>.stats.safetensors. Returns name -> the statistics."""
    ids = tmp_path / "ids.u32"
    np.random.default_rng(seed).integers(0, 256, size=65).astype("<u4").tofile(ids)
    stats = {}
    for name, d in dirs.items():
        out = tmp_path / f"{name}.stats.safetensors"
        run([fp4kit_bin(), "calibrate", d, "--data", ids, "--samples", "1", "--seq-len", "32",
             "-o", out, "--device", "cpu"])
        stats[name] = load_file(str(out))
    return stats


def run(cmd, expect=0):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert p.returncode == expect, f"{cmd} exited {p.returncode}:\n{p.stderr}\n{p.stdout}"
    return p


@pytest.fixture(scope="module")
def bf16_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("bf16") / "model"
    tiny_models.save("deepseek_v3", d)
    return d


@pytest.mark.parametrize("bits,strategy", [(4, "group"), (8, "group"), (4, "channel"),
                                           (8, "channel")])
def test_decode_equals_compressed_tensors(bf16_model, tmp_path, bits, strategy):
    tool = require_executable(tool_path("source-decode"))
    src = tmp_path / "int"
    ref = compress_checkpoint(bf16_model, src, bits, strategy)
    assert len(ref) == 12  # 4 experts x gate/up/down
    cfg = json.loads((src / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    # inspect shows each as the [n, k] weight it encodes
    rep = json.loads(run([fp4kit_bin(), "inspect", src, "--json"]).stdout)
    enc = {e["name"]: e for e in rep["encoded_weights"]}
    for m, (f32, _) in ref.items():
        e = enc[m + ".weight"]
        assert e["format"] == "INT_PACKED" and e["logical_shape"] == list(f32.shape)
        assert e["codes"] == m + ".weight_packed" and e["scales"] == m + ".weight_scale"
        assert e["description"].startswith(f"INT{bits} ")
    for m, (f32, default) in ref.items():
        out = tmp_path / "decoded.f32"
        p = run([tool, "packed-int", src, m, out])
        n, k = f32.shape
        assert p.stdout.split() == [str(n), str(k), str(bits), str(32 if strategy == "group" else k)]
        ours = np.fromfile(out, dtype="<f4").reshape(n, k)
        np.testing.assert_array_equal(ours.view(np.uint32), f32.numpy().view(np.uint32), err_msg=m)
        as_bf16 = torch.from_numpy(ours).to(torch.bfloat16)
        assert torch.equal(as_bf16.view(torch.int16), default.view(torch.int16)), m
        # the integers really are k-bit: at most 2^bits distinct multiples of each group's scale
        assert np.unique(np.abs(ours)).size <= (1 << bits) * (k // 32 if strategy == "group" else 1) * n


@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_calibrate_verify_equal_the_decompressed_model(bf16_model, tmp_path, bits):
    src = tmp_path / "int"
    ref = compress_checkpoint(bf16_model, src, bits, "group")
    twin = float32_twin(src, ref, tmp_path / "f32")
    # weight-only NVFP4 in both output formats: byte-identical tensors
    for fmt in ("modelopt", "compressed-tensors"):
        a, b = tmp_path / f"a-{fmt}", tmp_path / f"b-{fmt}"
        run([fp4kit_bin(), "quantize", src, a, "--weights-only", "--format", fmt])
        run([fp4kit_bin(), "quantize", twin, b, "--weights-only", "--format", fmt])
        ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
        assert ta.keys() == tb.keys()
        assert not any(k.endswith(("weight_shape",)) for k in ta)
        assert any(".experts.0.gate_proj." in k for k in ta)
        for k in ta:
            assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k].reshape(-1).view(torch.uint8),
                                                              tb[k].reshape(-1).view(torch.uint8)), (fmt, k)
        qa = json.loads((a / "config.json").read_text())["quantization_config"]
        qb = json.loads((b / "config.json").read_text())["quantization_config"]
        assert qa == qb
    # calibrate on the INT source: the statistics of the decompressed model, bit for bit
    stats = calibrate_each({"int": src, "f32": twin}, tmp_path, seed=3)
    assert stats["int"].keys() == stats["f32"].keys()
    assert any(".experts.gate_up" in k or ".experts." in k for k in stats["int"])
    for k in stats["int"]:
        assert torch.equal(stats["int"][k], stats["f32"][k]), k
    # W4A4 from those statistics, and verify --source decoding the INT experts
    w4a4 = tmp_path / "w4a4"
    run([fp4kit_bin(), "quantize", src, w4a4, "--stats", tmp_path / "int.stats.safetensors"])
    report = tmp_path / "verify.json"
    run([fp4kit_bin(), "verify", w4a4, "--source", src, "--report", report])
    rep = json.loads(report.read_text())
    text = json.dumps(rep)
    assert "not compared" not in text
    assert rep["ok"] and rep["counts"]["errors"] == 0
    compared = {e["module"] for e in rep["numeric"]["tensors"]}
    assert {m for m in ref} <= compared


def test_kept_int_expert_is_written_as_bf16(bf16_model, tmp_path):
    """An expert a rule keeps comes out dequantized (BF16 "<m>.weight"), never as integers
    without their scales; the other experts' fusion partners are still quantized."""
    src = tmp_path / "int"
    ref = compress_checkpoint(bf16_model, src, 4, "group")
    out = tmp_path / "out"
    kept = "model.layers.1.mlp.experts.2.down_proj"
    run([fp4kit_bin(), "quantize", src, out, "--weights-only", "--exclude", kept])
    t = load_file(str(out / "model.safetensors"))
    assert t[kept + ".weight"].dtype == torch.bfloat16
    assert torch.equal(t[kept + ".weight"].view(torch.int16), ref[kept][1].view(torch.int16))
    assert not any(k.startswith(kept + ".weight_") for k in t)
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    assert kept in q["ignore"]
    run([fp4kit_bin(), "verify", out, "--source", src])


def edit_config(d: Path, fn):
    c = json.loads((d / "config.json").read_text())
    fn(c["quantization_config"]["config_groups"]["group_0"]["weights"])
    (d / "config.json").write_text(json.dumps(c))


@pytest.mark.parametrize("change,message", [
    (lambda w: w.update(symmetric=False), "symmetric false"),
    (lambda w: w.update(num_bits=3), "num_bits 3"),
    (lambda w: w.update(strategy="tensor"), 'strategy "tensor"'),
    (lambda w: w.update(actorder="group"), "actorder group"),
    (lambda w: w.update(group_size=64), "matches no pack-quantized scheme"),
])
def test_unreadable_schemes_are_refused(bf16_model, tmp_path, change, message):
    src = tmp_path / "int"
    compress_checkpoint(bf16_model, src, 4, "group")
    edit_config(src, change)
    for cmd in (["quantize", src, tmp_path / "out", "--weights-only"],
                ["calibrate", src, "--data", src / "config.json", "-o", tmp_path / "s.st"]):
        p = run([fp4kit_bin(), *cmd], expect=1)
        assert message in p.stderr, p.stderr
        assert not (tmp_path / "out").exists()


def test_zero_point_or_missing_shape_is_refused(bf16_model, tmp_path):
    src = tmp_path / "int"
    compress_checkpoint(bf16_model, src, 4, "group")
    t = load_file(str(src / "model.safetensors"))
    m = "model.layers.1.mlp.experts.0.up_proj"
    t2 = dict(t)
    t2[m + ".weight_zero_point"] = torch.zeros(t[m + ".weight_scale"].shape[0] // 8,
                                               t[m + ".weight_scale"].shape[1], dtype=torch.int32)
    save_file(t2, str(src / "model.safetensors"), metadata={"format": "pt"})
    p = run([fp4kit_bin(), "quantize", src, tmp_path / "out", "--weights-only"], expect=1)
    assert m + ".weight_zero_point is present" in p.stderr
    t3 = dict(t)
    del t3[m + ".weight_shape"]
    save_file(t3, str(src / "model.safetensors"), metadata={"format": "pt"})
    p = run([fp4kit_bin(), "quantize", src, tmp_path / "out", "--weights-only"], expect=1)
    assert m + ".weight_shape" in p.stderr
    # an I32 weight_packed without a pack-quantized config
    c = json.loads((src / "config.json").read_text())
    del c["quantization_config"]
    (src / "config.json").write_text(json.dumps(c))
    save_file(t, str(src / "model.safetensors"), metadata={"format": "pt"})
    p = run([fp4kit_bin(), "quantize", src, tmp_path / "out", "--weights-only"], expect=1)
    assert "no compressed-tensors quantization_config with format pack-quantized" in p.stderr


def test_gguf_from_an_int_source(tmp_path, shared_data):
    """--format gguf from INT4 MLPs (a dense Llama): gguf-py reads the file; the NVFP4 tensors
    equal those made from the float32 decompression, and a kept INT4 linear is written as BF16
    of its logical [n, k] shape (not the packed one) holding the package's BF16 decompression."""
    from test_gguf_export import read_gguf
    common = tiny_models.COMMON
    tiny_models.COMMON = dict(common, vocab_size=512)  # stories260K's tokenizer
    try:
        tiny_models.save("llama", tmp_path / "bf16")
    finally:
        tiny_models.COMMON = common
    mlp = r".*\.mlp\.(gate|up|down)_proj\.weight$"
    tensors, qconfig, ref = tiny_models.pack_quantized(
        load_file(str(tmp_path / "bf16" / "model.safetensors")), pattern=mlp)
    src = tmp_path / "int"
    src.mkdir()
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    config["quantization_config"] = qconfig
    (src / "config.json").write_text(json.dumps(config))
    twin = float32_twin(src, ref, tmp_path / "f32")
    for d in (src, twin):
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (d / f).write_bytes((shared_data / "models" / "stories260k-llama" / f).read_bytes())
    kept = "model.layers.0.mlp.down_proj"
    for d, out in ((src, tmp_path / "a.gguf"), (twin, tmp_path / "b.gguf")):
        run([fp4kit_bin(), "quantize", d, out, "--format", "gguf", "--weights-only",
             "--exclude", kept])
    a, b = read_gguf(tmp_path / "a.gguf"), read_gguf(tmp_path / "b.gguf")
    assert a.keys() == b.keys()
    n, k = ref[kept][0].shape
    _, got = a["blk.0.ffn_down.weight"]
    assert got.shape == (n, k)
    np.testing.assert_array_equal(got, ref[kept][1].float().numpy())
    for name, (t, v) in a.items():
        if name != "blk.0.ffn_down.weight":
            assert t == b[name][0] and np.array_equal(v, b[name][1]), name
    assert any(t.name == "NVFP4" for t, _ in a.values())
