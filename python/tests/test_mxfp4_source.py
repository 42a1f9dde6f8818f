"""MXFP4 sources (issue 8, NVFP4-SPEC section 8): a tiny gpt-oss checkpoint as openai ships
gpt-oss-20b/120b (routed experts as `*_blocks` U8 [E, N, K/32, 16] + `*_scales` U8 E8M0 [E, N, K/32],
everything else BF16, config quantization_config {"quant_method": "mxfp4", ...}), written here
from the OCP MX format definition in numpy, then:

(a) transformers' MXFP4 dequantization of that file (convert_moe_packed_tensors, and loading it with
    Mxfp4Config(dequantize=True) on CPU) equals the numpy decoding: the fixture is what transformers
    reads;
(b) `fp4kit quantize SRC --scale-form cpu --weights-only` writes, for every tensor, the bytes of
    ModelOpt's W4A16 export (mtq.quantize + export_hf_checkpoint, CPU) of the model transformers
    dequantized from the same MXFP4 file (loaded with Mxfp4Config(dequantize=True), the model
    itself, no BF16 copy in between); likewise W4A4, fp4kit given ModelOpt's calibrated input amax
    as its stats file (as in test_quantize_modelopt.py);
(c) the output has no `_blocks` / `_scales` and `fp4kit verify OUT --source SRC` passes;
(d) a NaN (0xFF) E8M0 scale, a missing `_scales` tensor or one of the wrong shape make quantize
    exit 1 naming the tensor(s), leaving neither OUT nor OUT.partial.

The source is two shards with an index, a `_blocks` and its `_scales` in different shards, and
experts of magnitudes 2^0 .. 2^-9 (wide E8M0 range, one s2 shared by very different experts).
Dimensions: H = 64, I = 96 (2I = 192): every MXFP4 K (H for gate_up, I for down) is a multiple of
32 and H != 2I, so a transposed layout cannot pass for the right one.
"""
import copy
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tiny_models
from conftest import fp4kit_bin, require_executable, run_checked
from test_quantize_modelopt import (CALIB_IDS, check_same_quantized_tensors, excluded_modules,
                                    modelopt_input_amax, quantized_modules,
                                    quantized_tensor_names, raw, read_tensors, write_stats)

transformers = pytest.importorskip("transformers")
mxfp4 = pytest.importorskip("transformers.integrations.mxfp4")

HIDDEN, INTER, LAYERS, EXPERTS = 64, 96, 2, 4
PROJS = ("gate_up_proj", "down_proj")
# gpt-oss-20b's config.json quantization_config (openai/gpt-oss-20b on the Hub).
QUANT_CONFIG = {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"],
                "quant_method": "mxfp4"}

# E2M1 code -> value (OCP MX spec v1.0, table of FP4 E2M1): codes 0..7 positive, 8..15 negative.
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                 -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)
E2M1_EMAX = 2  # exponent of the largest E2M1 normal (6 = 1.5 * 2^2)


def mxfp4_encode(w: np.ndarray):
    """[..., N, K] float32 -> (blocks U8 [..., N, K/32, 16], scales U8 [..., N, K/32]).
    Per block of 32 along K: shared scale X = 2^(floor(log2(amax)) - emax_elem) stored as the E8M0
    byte exp + 127; element codes = E2M1 of x / X rounded to nearest (ties to the even code),
    saturating at 6 (a negative value that rounds to 0 gets +0, code 0); byte j holds element 2j
    in its LOW nibble, 2j+1 in its high nibble."""
    *lead, n, k = w.shape
    assert k % 32 == 0
    x = w.reshape(*lead, n, k // 32, 32).astype(np.float32)
    amax = np.abs(x).max(-1, keepdims=True)
    exp = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1))) - E2M1_EMAX, 0)
    exp = exp.astype(np.int32)
    assert ((exp + 127 >= 0) & (exp + 127 <= 254)).all()
    q = np.abs(x) / np.ldexp(np.float32(1), exp)
    dist = np.abs(q[..., None] - E2M1[:8])  # [..., 32, 8]
    nearest = dist == dist.min(-1, keepdims=True)
    even = (np.arange(8) % 2 == 0)
    code = np.argmax(nearest * 2 + even, -1).astype(np.uint8)  # tie -> the even code
    code = np.where((x < 0) & (code != 0), code | 8, code).astype(np.uint8)
    blocks = (code[..., 0::2] | (code[..., 1::2] << 4)).astype(np.uint8)
    return np.ascontiguousarray(blocks), np.ascontiguousarray((exp[..., 0] + 127).astype(np.uint8))


def mxfp4_decode(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """blocks [..., G, 16], scales [..., G] -> float32 [..., G*32] (value = E2M1 * 2^(s - 127))."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], -1).reshape(*blocks.shape[:-1], 32)
    with np.errstate(over="ignore"):  # 0xFF (NaN) is only written by the bad-scale test
        vals = E2M1[codes] * np.ldexp(np.float32(1), scales.astype(np.int32) - 127)[..., None]
    return vals.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32).astype(np.float32)


def test_encoder_by_hand():
    """One block worked by hand: amax 5.9 -> floor(log2 5.9) - 2 = 0 -> scale byte 127; 5.9 -> 6
    (code 7), -0.74 -> -0.5 (code 9), 1.25 is a tie between 1.0 (code 2) and 1.5 (code 3) -> the
    even code 2, 2.5 ties 2 (4) and 3 (5) -> 4, 0.2 -> 0 (code 0)."""
    w = np.zeros((1, 32), np.float32)
    w[0, :5] = [5.9, -0.74, 1.25, 2.5, 0.2]
    blocks, scales = mxfp4_encode(w)
    assert scales.tolist() == [[127]]
    assert blocks[0, 0, :3].tolist() == [0x97, 0x42, 0x00]
    # amax 2.5 -> exp floor(1.32) - 2 = -1 (byte 126), X = 0.5: 0.1/X = 0.2 -> 0, -0.74/X = -1.48
    # -> -1.5 (code 0xB), 1.25/X = 2.5 ties 2 and 3 -> 2 (code 4), 2.5/X = 5 ties 4 (code 6) and
    # 6 (code 7) -> code 6.
    w[0, 0] = 0.1
    blocks, scales = mxfp4_encode(w)
    assert scales.tolist() == [[126]]
    assert blocks[0, 0, :2].tolist() == [0xB0, 0x64]
    np.testing.assert_array_equal(mxfp4_decode(blocks, scales)[0, :4], [0.0, -0.75, 1.0, 2.0])


def write_mxfp4_gpt_oss(path: Path, damage=None) -> dict:
    """Saves the tiny gpt-oss (H 64, I 96) with its experts MXFP4-encoded, in two shards with an
    index as the real checkpoints are (layer 1's `_blocks` and `_scales` in different shards);
    returns {expert tensor name: numpy decoding [E, N, K]}. Expert e's weights are scaled by
    2^(-3e) before encoding: E8M0 scales over a wider range, and experts of very different
    magnitudes sharing the tensor's one s2 (as in real models). `damage(tensors)`, if given,
    alters the tensor dict before it is written (the bad-source tests)."""
    model = tiny_models.build("gpt_oss", intermediate_size=INTER)
    assert model.config.hidden_size == HIDDEN and model.config.intermediate_size == INTER
    model.save_pretrained(path)
    tensors = read_tensors(path)
    decoded = {}
    for layer in range(LAYERS):
        for proj in PROJS:
            name = f"model.layers.{layer}.mlp.experts.{proj}"
            bmm = tensors.pop(name)  # [E, K, N]: gpt-oss's in-memory / BF16 layout
            spread = torch.exp2(-3.0 * torch.arange(bmm.shape[0])).reshape(-1, 1, 1)
            blocks, scales = mxfp4_encode((bmm.float() * spread).transpose(1, 2).numpy())  # [N, K]
            tensors[f"{name}_blocks"] = torch.from_numpy(blocks)
            tensors[f"{name}_scales"] = torch.from_numpy(scales)
            decoded[name] = mxfp4_decode(blocks, scales)
    for f in path.glob("*.safetensors"):
        f.unlink()
    if damage is not None:
        damage(tensors)
    first = {k for k in tensors if ".layers.1." not in k or k.endswith("_blocks")}
    shards = {"model-00001-of-00002.safetensors": sorted(first),
              "model-00002-of-00002.safetensors": sorted(set(tensors) - first)}
    for file, names in shards.items():
        save_file({k: tensors[k] for k in names}, path / file, metadata={"format": "pt"})
    (path / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
        "weight_map": {k: file for file, names in shards.items() for k in names}}, indent=2))
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"] = QUANT_CONFIG
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return decoded


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("gptoss-mxfp4") / "src"
    return path, write_mxfp4_gpt_oss(path)


def dequantized_model(src: Path):
    """transformers' own MXFP4 load on CPU, dequantized to BF16."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.bfloat16,
        quantization_config=transformers.Mxfp4Config(dequantize=True)).eval()


def test_fixture_layout_is_gpt_oss_mxfp4(source):
    src, _ = source
    shapes = {}
    for file in src.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            shapes.update({k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape())
                           for k in f.keys()})
    e, h, i = EXPERTS, HIDDEN, INTER
    p = "model.layers.1.mlp.experts."
    assert shapes[p + "gate_up_proj_blocks"] == ("U8", [e, 2 * i, h // 32, 16])
    assert shapes[p + "gate_up_proj_scales"] == ("U8", [e, 2 * i, h // 32])
    assert shapes[p + "down_proj_blocks"] == ("U8", [e, h, i // 32, 16])
    assert shapes[p + "down_proj_scales"] == ("U8", [e, h, i // 32])
    assert shapes[p + "gate_up_proj_bias"] == ("BF16", [e, 2 * i])
    assert shapes["model.layers.1.mlp.router.weight"] == ("BF16", [e, h])
    assert not any(k.endswith(("experts.gate_up_proj", "experts.down_proj")) for k in shapes)
    wmap = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    assert wmap.keys() == shapes.keys()
    assert wmap[p + "down_proj_blocks"] != wmap[p + "down_proj_scales"]
    scales = read_tensors(src)["model.layers.0.mlp.experts.gate_up_proj_scales"]
    assert scales[0].max() - scales[3].min() >= 9, "experts' E8M0 scales do not spread"


def test_transformers_decoding_equals_numpy_decoding(source):
    """(a) The fixture: transformers' convert_moe_packed_tensors and its dequantizing load on CPU
    give exactly the numpy decoding of the format definition."""
    src, decoded = source
    tensors = read_tensors(src)
    model = dequantized_model(src)
    params = dict(model.named_parameters())
    for name, ref in decoded.items():
        ref_bmm = np.ascontiguousarray(ref.transpose(0, 2, 1))  # [E, K, N], gpt-oss's layout
        theirs = mxfp4.convert_moe_packed_tensors(tensors[f"{name}_blocks"],
                                                  tensors[f"{name}_scales"], dtype=torch.float32)
        np.testing.assert_array_equal(theirs.numpy().view(np.uint32), ref_bmm.view(np.uint32),
                                      err_msg=name)
        loaded = params[name].detach()
        assert loaded.dtype == torch.bfloat16 and tuple(loaded.shape) == ref_bmm.shape, name
        # Every decoded value (3 significant bits) is exact in bf16.
        np.testing.assert_array_equal(loaded.float().numpy(), ref_bmm, err_msg=name)


def fp4kit_run(*args) -> subprocess.CompletedProcess:
    cmd = [require_executable(fp4kit_bin()), *args]
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


@pytest.fixture(scope="module", params=["w4a16", "w4a4"])
def outputs(request, source, tmp_path_factory):
    """fp4kit's and ModelOpt's outputs of the MXFP4 source, and the modules whose calibrated input
    amax is 0. W4A16: weight-only on both sides. W4A4: ModelOpt calibrates (NVFP4_DEFAULT_CFG) the
    dequantized model and its calibrated input amax goes to fp4kit as the stats file, as in
    test_quantize_modelopt.py."""
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint
    mode = request.param
    src, _ = source
    work = tmp_path_factory.mktemp(f"gptoss-mxfp4-{mode}")
    model = dequantized_model(src)
    cfg = copy.deepcopy(mtq.W4A16_NVFP4_CFG if mode == "w4a16" else mtq.NVFP4_DEFAULT_CFG)
    with torch.no_grad():
        model = mtq.quantize(model, cfg, lambda m: m(CALIB_IDS))
    extra, zero_input = ["--weights-only"], set()
    if mode == "w4a4":
        amax = modelopt_input_amax(model, "gpt_oss")
        assert {f"model.layers.{l}.mlp.experts.{p}" for l in range(LAYERS) for p in PROJS} <= set(amax)
        write_stats(work / "stats.safetensors", amax)
        extra, zero_input = ["--stats", work / "stats.safetensors"], {m for m, a in amax.items()
                                                                      if a == 0.0}
    with torch.no_grad():
        export_hf_checkpoint(model, export_dir=work / "modelopt")
    ours = work / "fp4kit"
    proc = fp4kit_run("quantize", src, ours, "--scale-form", "cpu", *extra)
    assert proc.returncode == 0, f"fp4kit quantize exited {proc.returncode}:\n{proc.stderr}"
    return ours, work / "modelopt", zero_input


def test_quantized_and_unquantized_tensors_identical_to_modelopt(outputs):
    """(b) Every tensor of fp4kit's output has ModelOpt's name, dtype, shape and bytes."""
    ours_dir, theirs_dir, zero_input = outputs
    ours, theirs = read_tensors(ours_dir), read_tensors(theirs_dir)
    assert sorted(ours) == sorted(theirs), (f"only fp4kit: {sorted(set(ours) - set(theirs))}; "
                                            f"only ModelOpt: {sorted(set(theirs) - set(ours))}")
    q = quantized_modules(theirs)
    bmm = {f"model.layers.{l}.mlp.experts.{p}" for l in range(LAYERS) for p in PROJS}
    assert bmm <= q, "ModelOpt did not quantize the experts: the reference run is broken"
    assert quantized_modules(ours) == q
    check_same_quantized_tensors(ours, theirs, q, f"gpt-oss MXFP4 {ours_dir.parent.name}",
                                 zero_input)
    qnames = quantized_tensor_names(q)
    for name in sorted(set(theirs) - qnames):
        a, b = ours[name], theirs[name]
        assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), name
        assert raw(a) == raw(b), f"{name}: differs from ModelOpt's"


def test_excluded_modules_and_config_as_modelopt(outputs, source):
    ours_dir, theirs_dir, _ = outputs
    candidates = ({f"model.layers.{l}.mlp.{m}" for l in range(LAYERS)
                   for m in ("router", "experts.gate_up_proj", "experts.down_proj")}
                  | {"lm_head", "model.embed_tokens"})
    ex_theirs = excluded_modules(theirs_dir, candidates)
    assert ex_theirs == {"lm_head", "model.embed_tokens", "model.layers.0.mlp.router",
                         "model.layers.1.mlp.router"}, "ModelOpt changed"
    assert excluded_modules(ours_dir, candidates) == ex_theirs
    qc_ours = json.loads((ours_dir / "config.json").read_text())["quantization_config"]
    qc_theirs = json.loads((theirs_dir / "config.json").read_text())["quantization_config"]
    for key in ("quant_method", "quant_algo", "config_groups"):
        assert qc_ours[key] == qc_theirs[key], f"config.json quantization_config[{key}]"
    assert "modules_to_not_convert" not in qc_ours, "the MXFP4 source config leaked into the output"
    hq_ours = json.loads((ours_dir / "hf_quant_config.json").read_text())["quantization"]
    hq_theirs = json.loads((theirs_dir / "hf_quant_config.json").read_text())["quantization"]
    for key in ("quant_algo", "kv_cache_quant_algo", "group_size"):
        assert hq_ours[key] == hq_theirs[key], f"hf_quant_config.json [{key}]"


def test_output_has_no_mxfp4_tensors_and_verifies(outputs, source):
    """(c) The `_blocks` / `_scales` of the source are gone and verify passes against the source,
    for fp4kit's output and for ModelOpt's export of the same model."""
    ours_dir, theirs_dir, _ = outputs
    src, _ = source
    ours = read_tensors(ours_dir)
    left = sorted(k for k in ours if k.endswith(("_blocks", "_scales")))
    assert not left, left
    for l in range(LAYERS):
        assert ours[f"model.layers.{l}.mlp.experts.gate_up_proj"].shape == (EXPERTS, HIDDEN // 2,
                                                                             2 * INTER)
        assert ours[f"model.layers.{l}.mlp.experts.down_proj"].shape == (EXPERTS, INTER // 2, HIDDEN)
    run_checked([fp4kit_bin(), "verify", ours_dir, "--source", src])
    run_checked([fp4kit_bin(), "verify", theirs_dir, "--source", src])


def test_verify_decodes_the_mxfp4_source(outputs, tmp_path):
    """verify's comparison with an MXFP4 source really decodes it: against a source whose expert 2
    of one tensor has every E8M0 scale one higher (its weights doubled, by the format's definition)
    it fails on that tensor and expert."""
    ours_dir = outputs[0]
    name = "model.layers.1.mlp.experts.down_proj"

    def double_expert_2(tensors):
        tensors[f"{name}_scales"][2] += 1
    src = tmp_path / "doubled"
    write_mxfp4_gpt_oss(src, double_expert_2)
    proc = fp4kit_run("verify", ours_dir, "--source", src)
    assert proc.returncode == 1, proc.stdout
    errors = [l for l in proc.stdout.splitlines() if l.strip().startswith("error")]
    assert len(errors) == 1 and name in errors[0] and "expert 2 " in errors[0], proc.stdout


def test_nan_e8m0_scale_is_an_error_naming_the_tensor(source, tmp_path):
    """(d) An E8M0 0xFF (NaN) scale: exit 1, the `_scales` tensor and the NaN named, no finished
    output. The same model without the NaN quantizes, so the error is the NaN's."""
    bad = "model.layers.1.mlp.experts.down_proj_scales"
    clean = fp4kit_run("quantize", source[0], tmp_path / "clean", "--scale-form", "cpu",
                       "--weights-only")
    assert clean.returncode == 0, clean.stderr

    def nan_scale(tensors):
        tensors[bad].view(-1)[7] = 0xFF
    stderr = quantize_fails(tmp_path, nan_scale)
    assert bad in stderr and "nan" in stderr.lower(), stderr


def quantize_fails(tmp_path: Path, damage) -> str:
    """Quantizes a damaged MXFP4 source: exit 1 and nothing that looks like an output."""
    src, out = tmp_path / "src", tmp_path / "out"
    write_mxfp4_gpt_oss(src, damage)
    proc = fp4kit_run("quantize", src, out, "--scale-form", "cpu", "--weights-only")
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{proc.stderr}"
    assert not out.exists(), "an output directory was left behind"
    assert not (tmp_path / "out.partial").exists(), "OUT.partial was left behind"
    return proc.stderr


def test_missing_scales_tensor_is_an_error_naming_both(tmp_path):
    blocks = "model.layers.1.mlp.experts.down_proj_blocks"
    scales = "model.layers.1.mlp.experts.down_proj_scales"
    stderr = quantize_fails(tmp_path, lambda tensors: tensors.pop(scales))
    assert blocks in stderr and scales in stderr, stderr


def test_scales_of_the_wrong_shape_are_an_error_naming_them(tmp_path):
    """`_scales` must be `_blocks`' shape without its last dim ([E, N, K/32])."""
    scales = "model.layers.0.mlp.experts.gate_up_proj_scales"

    def drop_a_group(tensors):
        tensors[scales] = tensors[scales][..., :1].contiguous()
    stderr = quantize_fails(tmp_path, drop_a_group)
    assert scales in stderr, stderr


def test_format_b_refused_for_the_mxfp4_source(source, tmp_path):
    """compressed-tensors has no 3-D NVFP4 layout: as for the BF16 gpt-oss, a clear refusal."""
    out = tmp_path / "ct"
    proc = fp4kit_run("quantize", source[0], out, "--scale-form", "cpu", "--weights-only",
                      "--format", "compressed-tensors")
    assert proc.returncode == 1, proc.stderr
    assert "mlp.experts." in proc.stderr and "--format modelopt" in proc.stderr, proc.stderr
    assert not out.exists() and not (tmp_path / "ct.partial").exists()


def test_block_decoding_to_infinity_is_an_error_naming_the_tensor(tmp_path):
    """E8M0 254 with code 6: 6 * 2^127 overflows float32 (transformers decodes it to inf too).
    Not a weight anyone can quantize: exit 1 naming the expert tensor, no output."""
    name = "model.layers.0.mlp.experts.gate_up_proj"

    def overflow(tensors):
        tensors[f"{name}_scales"][1, 3, 0] = 254
        tensors[f"{name}_blocks"][1, 3, 0, 0] = 0x77  # elements 0 and 1: code 7 = 6.0
    stderr = quantize_fails(tmp_path, overflow)
    assert f"{name}_blocks" in stderr or f"{name}_scales" in stderr, stderr
    assert "inf" in stderr.lower(), stderr
