"""`--format gguf` for the families whose llama.cpp layout needs more than renaming, on tiny random
transformers models (tiny_models.py, vocabulary and tokenizer of stories260K so llama.cpp can
tokenize and the TinyStories stream is in range):

- Qwen3.5/3.6-MoE (qwen35moe): Gated DeltaNet layers whose value heads llama.cpp tiles over key
  heads (convert_hf_to_gguf's _reorder_v_heads: rows of in_proj_qkv's V part, in_proj_z,
  in_proj_a/b, conv1d's V channels, A_log, dt_bias; columns of out_proj, moved in whole 16-weight
  NVFP4 blocks), zero-centred norms stored as 1 + w, A stored as -exp(A_log), conv1d squeezed.

Each family is checked twice, against references that are not fp4kit:
1. the `gguf` package reads every tensor under gguf-py's own name map; NVFP4 tensors
   dequantized by gguf-py times their `.scale` equal, bit for bit, the ModelOpt-format checkpoint's
   NVFP4 decode (numpy) with convert_hf_to_gguf's transforms re-implemented here in numpy;
2. llama.cpp (scripts/llama_cpp.sh) loads the GGUF and its perplexity on the TinyStories stream
   matches `fp4kit eval` of the same NVFP4 weights within 1% (llama.cpp rounds activations to Q8_0
   for NVFP4 products and keeps K/V in F16).
"""
import json
import re
import shutil

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tiny_models
from conftest import run_checked
from test_gguf_export import (add_value, assert_same_tensors, dequant_format_a, read_gguf,
                              stack_experts)
from test_gguf_llama_cpp import CTX, LlamaCpp, assert_ppl_close, llama  # noqa: F401 (fixture)

WINDOWS = 4
TOKENIZER = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def tiled(n_groups: int, per_group: int, head_dim: int) -> np.ndarray:
    """convert_hf_to_gguf's _reorder_v_heads as an index: output head (j, g) <- source (g, j)."""
    idx = np.arange(n_groups * per_group * head_dim).reshape(n_groups, per_group, head_dim)
    return idx.transpose(1, 0, 2).reshape(-1)


def qwen3next_transform(hf: str, v: np.ndarray, config: dict) -> np.ndarray:
    """qwen3next: the same norms, A and conv1d as qwen35moe, but no head tiling (its graph
    repeats key heads in transformers' grouped order); in_proj_qkvz / in_proj_ba as they are."""
    if hf.endswith("norm.weight") and not hf.endswith("linear_attn.norm.weight"):
        return np.float32(1) + v
    if hf.endswith("A_log"):
        return (-np.exp(v.astype(np.float64))).astype(np.float32)
    if ".conv1d." in hf:
        return v.squeeze(1)
    return v


def qwen35_transform(hf: str, v: np.ndarray, config: dict) -> np.ndarray:
    """The value llama.cpp's qwen35moe reads for a Hugging Face tensor (float32 v)."""
    kh, vh = config["linear_num_key_heads"], config["linear_num_value_heads"]
    kd, vd = config["linear_key_head_dim"], config["linear_value_head_dim"]
    if hf.endswith("norm.weight") and not hf.endswith("linear_attn.norm.weight"):
        return np.float32(1) + v  # Qwen3_5MoeRMSNorm: x * (1 + w)
    if hf.endswith("A_log"):  # llama.cpp reads A = -exp(A_log) (float64 exp, rounded once)
        return (-np.exp(v.astype(np.float64))).astype(np.float32)[tiled(kh, vh // kh, 1)]
    if "linear_attn." not in hf:
        return v
    qk = 2 * kh * kd
    if ".in_proj_qkv." in hf:
        return np.concatenate([v[:qk], v[qk:][tiled(kh, vh // kh, vd)]])
    if ".in_proj_z." in hf:
        return v[tiled(kh, vh // kh, vd)]
    if ".in_proj_a." in hf or ".in_proj_b." in hf:
        return v[tiled(kh, vh // kh, 1)]
    if ".out_proj." in hf:
        return v[:, tiled(kh, vh // kh, vd)]
    if ".conv1d." in hf:
        v = v.squeeze(1)
        return np.concatenate([v[:qk], v[qk:][tiled(kh, vh // kh, vd)]])
    if hf.endswith("dt_bias"):
        return v[tiled(kh, vh // kh, 1)]
    return v


# family: (gguf-py architecture, transform, quantize flags, modules the GGUF plan keeps
# unquantized because llama.cpp's graph ignores their .scale)
FAMILIES = {
    "qwen3_5_moe": (gguf.MODEL_ARCH.QWEN35MOE, qwen35_transform, ["--quantize-linear-attn"], None),
    # llama.cpp 0c1e570's qwen3next graph applies no .scale to the linear attention: the GGUF
    # keeps it unquantized (direct) or as its exact F32 decode (repacked).
    "qwen3_next": (gguf.MODEL_ARCH.QWEN3NEXT, qwen3next_transform, ["--quantize-linear-attn"],
                   re.compile(r".*\.linear_attn\.")),
    # The multimodal wrapper of the real checkpoints: text under model.language_model., the
    # vision tower left out (llama.cpp reads it from a separate mmproj GGUF).
    "qwen3_5_moe_vl": (gguf.MODEL_ARCH.QWEN35MOE, qwen35_transform, ["--quantize-linear-attn"],
                       None),
}


# tiny_models builders not in tiny_models.FAMILIES, added while a model is built.
EXTRA_MODELS = {"qwen3_next": tiny_models.qwen3_next}


def gguf_name(hf: str, arch, n_layers: int):
    """gguf-py's name for a Hugging Face tensor, with convert_hf_to_gguf's renames applied first
    (dt_bias -> dt_proj.bias); (name, expert or None)."""
    expert = None
    m = re.match(r"(.*\.experts)\.(\d+)\.(.*)$", hf)
    if m:
        hf, expert = f"{m.group(1)}.{m.group(3)}", int(m.group(2))
    if hf.endswith(".dt_bias"):
        hf = hf.removesuffix(".dt_bias") + ".dt_proj.bias"
    tmap = gguf.get_tensor_name_map(arch, n_layers)
    name = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
    if name is None:
        name = tmap.get_name(hf)
    assert name is not None, f"gguf-py has no name for {hf}"
    if hf.endswith((".weight", ".bias")) and not name.endswith((".weight", ".bias")):
        name += hf[hf.rfind("."):]
    return name, expert


def expected(src, fmt_a, arch, transform, direct: bool, unscaled=None) -> dict:
    """GGUF name -> float32 values. Repacked: format A's NVFP4 decode of every quantized linear
    (K % 64 != 0 ones too, written as that exact decode). Direct: the same where K % 64 == 0 and
    the source elsewhere (the GGUF plan keeps those unquantized)."""
    config = json.loads((src / "config.json").read_text())
    source, a = load_file(src / "model.safetensors"), load_file(fmt_a / "model.safetensors")
    stacked, out = {}, {}
    config = config.get("text_config", config)
    for ckpt_name, t in source.items():
        if ckpt_name.startswith("model.visual."):
            continue
        module = ckpt_name.removesuffix(".weight")
        hf = ckpt_name.replace("model.language_model.", "model.", 1)
        if (hf.endswith(".weight") and f"{module}.weight_scale" in a
                and not (direct and (t.shape[-1] % 64 or (unscaled and unscaled.match(hf))))):
            v = dequant_format_a(a[ckpt_name], a[f"{module}.weight_scale"],
                                 a[f"{module}.weight_scale_2"].item())
        else:
            v = t.float().numpy()
        v = transform(hf, v, config)
        name, expert = gguf_name(hf, arch, config["num_hidden_layers"])
        add_value(out, stacked, name, expert, v)
    return stack_experts(out, stacked)


@pytest.fixture(scope="module")
def family_files(tmp_path_factory, fp4kit, shared_data):
    cache = {}

    def get(family: str):
        if family not in cache:
            root = tmp_path_factory.mktemp(family)
            common, registered = tiny_models.COMMON, dict(tiny_models.FAMILIES)
            tiny_models.COMMON = dict(common, vocab_size=512)  # stories260K's tokenizer
            tiny_models.FAMILIES.update(EXTRA_MODELS)
            try:
                tiny_models.save(family, root / "src")
            finally:
                tiny_models.COMMON = common
                tiny_models.FAMILIES.clear()
                tiny_models.FAMILIES.update(registered)
            config = json.loads((root / "src" / "config.json").read_text())
            if family.startswith("qwen3_5_moe"):
                # M-RoPE sections that fit the tiny head (real configs: [11, 11, 10] of 64 rotary
                # dims); transformers' default would make llama.cpp abort (sections > head_dim).
                config.get("text_config", config)["rope_parameters"]["mrope_section"] = [1, 1, 0]
            (root / "src" / "config.json").write_text(json.dumps(config, indent=2))
            for f in TOKENIZER:
                shutil.copy(shared_data / "models" / "stories260k-llama" / f, root / "src" / f)
            extra = FAMILIES[family][2]
            run_checked([fp4kit, "quantize", root / "src", root / "a", "--weights-only", *extra])
            run_checked([fp4kit, "quantize", root / "a", root / "m.gguf", "--format", "gguf"])
            direct = root / "direct.gguf"  # straight from BF16, same plan
            run_checked([fp4kit, "quantize", root / "src", direct, "--format", "gguf",
                         "--weights-only", *extra])
            cache[family] = root
        return cache[family]
    return get


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("which", ["m.gguf", "direct.gguf"])
def test_family_gguf_equals_nvfp4_checkpoint(family_files, family, which):
    arch, transform, _, unscaled = FAMILIES[family]
    root = family_files(family)
    got = read_gguf(root / which)
    want = expected(root / "src", root / "a", arch, transform, which == "direct.gguf", unscaled)
    assert assert_same_tensors(got, want, f"{family} {which}") >= 8
    reader = gguf.GGUFReader(root / which)
    assert reader.fields["general.architecture"].contents() == arch_name(arch)
    if unscaled:
        for t in reader.tensors:
            if t.name.startswith(("blk.0.ssm_", "blk.2.ssm_")):
                assert t.tensor_type != gguf.GGMLQuantizationType.NVFP4, t.name


def arch_name(arch) -> str:
    return gguf.MODEL_ARCH_NAMES[arch]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_llama_cpp_runs_family_like_fp4kit_eval(family_files, fp4kit, llama, shared_data,  # noqa: F811
                                                tmp_path, family):
    root = family_files(family)
    full = np.fromfile(shared_data / "text" / "tinystories_val.stories260k.u16", "<u2")
    stream = full[: CTX * WINDOWS + 1].astype(np.int64)
    ids = tmp_path / "ids.u16"
    stream.astype("<u2").tofile(ids)
    proc = run_checked([fp4kit, "eval", root / "a", "--data", ids, "--ctx", CTX, "--json"])
    ours = json.loads(proc.stdout)["ppl"]["value"]
    m = LlamaCpp(llama, root / "m.gguf")
    try:
        theirs = m.ppl(stream, WINDOWS)
    finally:
        m.close()
    assert_ppl_close(family, theirs, ours)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_llama_cpp_logits_match_fp4kit_eval(family_files, fp4kit, llama, shared_data,  # noqa: F811
                                            tmp_path, family):
    """Logits of 100 TinyStories tokens (two chunks of llama.cpp's delta rule): llama.cpp on the
    GGUF against `fp4kit eval --dump-logits` on the ModelOpt-format checkpoint."""
    root = family_files(family)
    ids = np.fromfile(shared_data / "text" / "tinystories_val.stories260k.u16", "<u2")[:101]
    (tmp_path / "ids.u16").write_bytes(ids.tobytes())
    run_checked([fp4kit, "eval", root / "a", "--data", tmp_path / "ids.u16", "--ctx", 100,
                 "--dump-logits", tmp_path / "l.f32", "--threads", 2])
    ours = np.fromfile(tmp_path / "l.f32", np.float32).reshape(100, -1)
    m = LlamaCpp(llama, root / "m.gguf")
    try:
        theirs = m.logits(ids[:100])
    finally:
        m.close()
    spread = ours.std()
    err = np.abs(theirs - ours).max(axis=1) / spread  # per position
    print(f"{family}: logits std {spread:.4f}, max |llama.cpp - fp4kit| / std per position: "
          f"median {np.median(err):.4f}, max {err.max():.4f}")
    assert spread > 0.1
    # llama.cpp rounds the activations of NVFP4 products to Q8_0: a few percent of the spread,
    # and at a few positions a near-tie of the top-2 router flips an expert.
    assert np.median(err) < 0.1, np.median(err)
    assert (err < 0.25).mean() > 0.9, err


def test_llama_cpp_reads_w4a4_input_scales_and_ignores_them(fp4kit, llama, shared_data,  # noqa: F811
                                                             tmp_path):
    """What llama.cpp (0c1e570) does with the `.input_scale` tensors of a W4A4 GGUF: its loader
    creates every `<name>.input_scale` (llama-model.cpp's generic pass; a file tensor the loader
    does not create fails the load with "wrong number of tensors"), so the W4A4 file loads; its
    graph never reads them (build_lora_mm multiplies by `.scale` only; the CPU backend rounds
    activations to Q8_0 on its own). Checked: the W4A4 GGUF loads, holds the input scales fp4kit
    calibrated, and gives bit-identical logits after every input scale is multiplied by 1000."""
    src = shared_data / "models" / "stories260k-mixtral-routed"
    data = shared_data / "text" / "tinystories_val.stories260k.u16"
    ids = tmp_path / "ids.u16"
    ids.write_bytes(data.read_bytes()[:4096])
    stats = tmp_path / "stats.safetensors"
    run_checked([fp4kit, "calibrate", src, "--data", ids, "--samples", "4", "--seq-len", "64",
                 "-o", stats])
    out = tmp_path / "w4a4.gguf"
    run_checked([fp4kit, "quantize", src, out, "--format", "gguf", "--stats", stats])
    tokens = np.fromfile(data, "<u2")[:64]

    def logits():
        m = LlamaCpp(llama, out)
        try:
            return m.logits(tokens)
        finally:
            m.close()

    before = logits()
    reader = gguf.GGUFReader(out, "r+")
    scales = [t for t in reader.tensors if t.name.endswith(".input_scale")]
    assert len(scales) >= 10 and all((np.asarray(t.data) > 0).all() for t in scales)
    first = (scales[0].name, np.array(scales[0].data))
    for t in scales:
        t.data[...] = t.data * np.float32(1000)
    del reader, scales
    changed = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}[first[0]]
    assert np.array_equal(changed, first[1] * np.float32(1000))  # the file itself changed
    after = logits()
    assert np.isfinite(before).all() and before.std() > 0.1
    assert np.array_equal(before, after), "llama.cpp's logits depend on .input_scale"


@pytest.mark.parametrize("family,arch,source", [
    ("deepseek_v3", "deepseek2", "deepseek2.cpp"), ("gpt_oss", "gpt-oss", "openai-moe.cpp"),
    ("llama4", "llama4", "llama4.cpp"), ("glm4_moe", "glm4moe", "glm4-moe.cpp")])
def test_families_whose_llama_cpp_experts_ignore_scale_are_refused(fp4kit, tmp_path, family,
                                                                    arch, source):
    """llama.cpp 0c1e570 runs these architectures, but their graphs pass no .scale to the routed
    experts: `--format gguf` refuses them (exit 1), naming the architecture and the llama.cpp
    source, and leaves no file behind."""
    import subprocess
    src = tmp_path / "src"
    if family == "glm4_moe":  # no tiny_models builder: DeepSeek's tensors under glm4_moe's name
        tiny_models.save("deepseek_v3", src)
        config = json.loads((src / "config.json").read_text())
        config["model_type"] = "glm4_moe"
        (src / "config.json").write_text(json.dumps(config))
    else:
        tiny_models.save(family, src)
    out = tmp_path / "m.gguf"
    proc = subprocess.run([str(fp4kit), "quantize", str(src), str(out), "--format", "gguf",
                           "--weights-only"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert f"'{arch}'" in proc.stderr and source in proc.stderr, proc.stderr
    assert "unscaled" in proc.stderr, proc.stderr
    assert not out.exists() and not (tmp_path / "m.gguf.partial").exists()


def test_qwen35_fused_experts_give_the_same_gguf(family_files, fp4kit, tmp_path):
    """Real Qwen3.5/3.6 checkpoints store routed experts fused (experts.gate_up_proj [E, 2I, H],
    experts.down_proj [E, H, I]): the GGUF from that layout holds the same tensors, byte for byte,
    as the one from per-expert tensors (here down_proj, K = 32, is kept whole: it is already
    llama.cpp's stacked ffn_down_exps)."""
    root = family_files("qwen3_5_moe")
    src = tmp_path / "fused"
    src.mkdir()
    for f in (root / "src").iterdir():
        if f.suffix == ".json":
            shutil.copy(f, src / f.name)
    t = load_file(root / "src" / "model.safetensors")
    config = json.loads((root / "src" / "config.json").read_text())
    for layer in range(config["num_hidden_layers"]):
        x = f"model.layers.{layer}.mlp.experts."
        n = config["num_experts"]
        t[x + "gate_up_proj"] = torch.stack([torch.cat([t.pop(f"{x}{e}.gate_proj.weight"),
                                                        t.pop(f"{x}{e}.up_proj.weight")])
                                             for e in range(n)]).contiguous()
        t[x + "down_proj"] = torch.stack([t.pop(f"{x}{e}.down_proj.weight")
                                          for e in range(n)]).contiguous()
    from safetensors.torch import save_file
    save_file(t, src / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "fused.gguf"
    run_checked([fp4kit, "quantize", src, out, "--format", "gguf", "--weights-only",
                 *FAMILIES["qwen3_5_moe"][2]])
    got = {x.name: np.array(x.data) for x in gguf.GGUFReader(out).tensors}
    want = {x.name: np.array(x.data) for x in gguf.GGUFReader(root / "direct.gguf").tensors}
    assert sorted(got) == sorted(want)
    assert [k for k in got if not np.array_equal(got[k], want[k])] == []
