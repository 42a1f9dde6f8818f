"""Kimi-K2.5 as Moonshot publishes it (tiny_models.kimi_k25): the kimi_k25 multimodal wrapper,
its kimi_k2 (DeepSeek-V3) text model under language_model.model. / language_model.lm_head with
INT4 compressed-tensors routed experts, a vision tower and projector in BF16.

References: the engine on the wrapper against transformers' DeepseekV3 (float32) on the text
model with the experts as compressed-tensors decompresses them, and against fp4kit on that plain
DeepSeek-V3 checkpoint (statistics and W4A4 bytes equal, names aside); the output's config and
exclusion list as vLLM's KimiK25ForConditionalGeneration and ModelOpt's exporter need them.
"""
import json

import numpy as np
import pytest
import torch

from conftest import fp4kit_bin
import tiny_models

pytest.importorskip("compressed_tensors")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402
from test_engine_conformance import assert_logits_match, fp4kit_logits  # noqa: E402
from test_packed_int_source import calibrate_each, run  # noqa: E402

PREFIX = "language_model."


@pytest.fixture(scope="module")
def k25(tmp_path_factory):
    """The K2.5 checkpoint and its text model as a plain DeepSeek-V3 checkpoint (model.*,
    lm_head), experts as compressed-tensors' float32 decompression."""
    root = tmp_path_factory.mktemp("k25")
    src = root / "k25"
    ref = tiny_models.kimi_k25(src)
    tensors = load_file(str(src / "model.safetensors"))
    text = {}
    for k, v in tensors.items():
        if not k.startswith(PREFIX):
            continue
        m = k[len(PREFIX):]
        if m.endswith((".weight_packed", ".weight_scale", ".weight_shape")):
            continue
        text[m] = v
    for m, (f32, _) in ref.items():
        text[m[len(PREFIX):] + ".weight"] = f32.contiguous()
    twin = root / "twin"
    twin.mkdir()
    save_file(text, str(twin / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text())["text_config"]
    cfg = {k: v for k, v in cfg.items() if k != "quantization_config"}
    cfg.update(model_type="deepseek_v3", tie_word_embeddings=False)
    (twin / "config.json").write_text(json.dumps(cfg))
    return src, twin, ref


def test_checkpoint_is_k25_shaped(k25):
    src, _, ref = k25
    t = load_file(str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    assert cfg["model_type"] == "kimi_k25" and cfg["text_config"]["model_type"] == "kimi_k2"
    q = cfg["text_config"]["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "pack-quantized"
    assert q["config_groups"]["group_0"]["weights"]["num_bits"] == 4
    assert len(ref) == 12 and all(m.startswith("language_model.model.layers.1.mlp.experts.") for m in ref)
    assert t["language_model.model.layers.1.mlp.experts.0.gate_proj.weight_packed"].dtype == torch.int32
    assert "language_model.lm_head.weight" in t and "vision_tower.encoder.blocks.0.wqkv.weight" in t


def test_engine_logits_match_transformers_on_the_text_model(k25, tmp_path):
    src, twin, _ = k25
    model = transformers.AutoModelForCausalLM.from_pretrained(
        twin, dtype=torch.float32, attn_implementation="eager").eval()
    ids = np.random.default_rng(5).integers(0, 256, size=49, dtype=np.uint16)
    with torch.no_grad():
        ref = model(torch.tensor(ids[:-1].astype(np.int64))[None]).logits[0].numpy()
    got = fp4kit_logits(fp4kit_bin(), src, ids, tmp_path)
    assert_logits_match(got, ref, "kimi_k25 (INT4 experts) vs transformers DeepseekV3 fp32")
    # and exactly what fp4kit computes on the plain DeepSeek-V3 twin
    (tmp_path / "twin").mkdir()
    twin_logits = fp4kit_logits(fp4kit_bin(), twin, ids, tmp_path / "twin")
    np.testing.assert_array_equal(got, twin_logits)


def test_calibrate_quantize_verify(k25, tmp_path):
    src, twin, _ = k25
    stats = calibrate_each({"k25": src, "twin": twin}, tmp_path, seed=9)
    renamed = {k.replace(PREFIX + "model.", "model.").replace(PREFIX + "lm_head", "lm_head"): v
               for k, v in stats["k25"].items()}
    assert renamed.keys() == stats["twin"].keys()
    assert any(".mlp.experts." in k for k in renamed)
    for k, v in renamed.items():
        assert torch.equal(v, stats["twin"][k]), k

    out, out_twin = tmp_path / "w4a4", tmp_path / "w4a4-twin"
    p = run([fp4kit_bin(), "quantize", src, out, "--stats", tmp_path / "k25.stats.safetensors",
             "--report", tmp_path / "report.json"])
    run([fp4kit_bin(), "quantize", twin, out_twin, "--stats", tmp_path / "twin.stats.safetensors"])
    a, b = load_file(str(out / "model.safetensors")), load_file(str(out_twin / "model.safetensors"))
    src_t = load_file(str(src / "model.safetensors"))
    # the text model: the twin's bytes under the wrapper's names (experts from INT4 = from the
    # float32 decompression); vision tower and projector copied as they are
    for k, v in a.items():
        if k.startswith(PREFIX):
            w = b[k.replace(PREFIX + "model.", "model.").replace(PREFIX + "lm_head", "lm_head")]
            assert v.dtype == w.dtype and torch.equal(v.reshape(-1).view(torch.uint8),
                                                      w.reshape(-1).view(torch.uint8)), k
        else:
            assert k.startswith(("vision_tower.", "mm_projector.")), k
            assert torch.equal(v.view(torch.uint8) if v.dim() else v, src_t[k].view(torch.uint8)), k
    assert sum(k.startswith(("vision_tower.", "mm_projector.")) for k in a) == 12
    assert "language_model.model.layers.1.mlp.experts.3.down_proj.weight_scale_2" in a
    assert "language_model.model.layers.1.self_attn.kv_b_proj.input_scale" in a

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "kimi_k25" and cfg["architectures"] == ["KimiK25ForConditionalGeneration"]
    assert "quantization_config" not in cfg["text_config"]  # the INT4 source's: gone
    q = cfg["quantization_config"]
    assert q["quant_method"] == "modelopt" and q["quant_algo"] == "NVFP4"
    ignore = set(q["ignore"])
    hf = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
    assert set(hf["exclude_modules"]) == ignore
    # vision tower and projector as wildcards, the head, the routers under the checkpoint's
    # names and under vLLM's (KimiK25ForConditionalGeneration: language_model.layers..., lm_head)
    for name in ("vision_tower*", "mm_projector*", "language_model.lm_head", "lm_head",
                 "language_model.model.layers.1.mlp.gate", "language_model.layers.1.mlp.gate"):
        assert name in ignore, name
    for k in a:  # nothing quantized is excluded, under either name
        if k.endswith(".weight_scale_2"):
            m = k[: -len(".weight_scale_2")]
            assert m not in ignore and m.replace("language_model.model.", "language_model.") not in ignore
    # verify reads it back like a loader and against the INT4 source
    report = tmp_path / "verify.json"
    run([fp4kit_bin(), "verify", out, "--source", src, "--report", report])
    rep = json.loads(report.read_text())
    assert rep["ok"] and rep["counts"]["errors"] == 0
    compared = {e["module"] for e in rep["numeric"]["tensors"]}
    assert "language_model.model.layers.1.mlp.experts.0.gate_proj" in compared


def test_weights_only_dry_run_plan_says_why(k25, tmp_path):
    src, _, _ = k25
    plan = tmp_path / "plan.json"
    run([fp4kit_bin(), "quantize", src, tmp_path / "out", "--weights-only", "--dry-run",
         "--plan-json", plan])
    p = json.loads(plan.read_text())
    text = json.dumps(p)
    assert "dequantized from INT4 (compressed-tensors pack-quantized, a scale per 32 columns)" in text
    assert "a scale per row" not in text  # K = 32 = group size is still the group strategy
    assert "vision/audio tower" in text
    assert p["family"] == "deepseek_v3"


def test_other_wrapper_of_deepseek_is_refused_by_the_engine(k25, tmp_path):
    src, _, _ = k25
    d = tmp_path / "other"
    d.mkdir()
    (d / "model.safetensors").symlink_to(src / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "some_vlm"
    (d / "config.json").write_text(json.dumps(cfg))
    ids = tmp_path / "ids.u32"
    np.arange(40, dtype="<u4").tofile(ids)
    p = run([fp4kit_bin(), "calibrate", d, "--data", ids, "-o", tmp_path / "s.st"], expect=1)
    assert "multimodal wrapper model_type 'some_vlm'" in p.stderr
