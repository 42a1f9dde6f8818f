"""`fp4kit quantize --format gguf` against the `gguf` package of PyPI (llama.cpp's gguf-py 0.19.0).

What is checked, with gguf-py as the reader and the name map (not fp4kit's):
- every tensor of the file reads back; NVFP4 tensors dequantized by gguf-py
  (`gguf.quants.dequantize`) times their `.scale` tensor equal, bit for bit, the NVFP4 checkpoint
  of the same source (fp4kit's ModelOpt-format output, decoded here in numpy the way loaders do:
  E2M1 code x E4M3 block scale x weight_scale_2), with llama.cpp's q/k row permutation for the
  llama architecture re-implemented here as convert_hf_to_gguf does it;
- tensors kept unquantized (norms, embeddings, routers, K % 64 != 0) equal the source values;
- tensor names are gguf-py's TensorNameMap names, experts stacked [E, N, K];
- an existing NVFP4 checkpoint (fp4kit's ModelOpt and compressed-tensors output, and ModelOpt's
  own H100 export in python/golden) is repacked without requantizing.
"""
import json
import re
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_checked

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)

# llama.cpp (0c1e570) does not apply the .scale of MLP tensors in its qwen2/qwen2moe/olmoe graphs:
# --format gguf keeps their MLP unquantized (repacking writes its exact F32 decode).
MLP_SCALE_IGNORED = {"stories260k-qwen2moe"}

SHARED = {
    "stories260k-llama": gguf.MODEL_ARCH.LLAMA,
    "stories260k-mixtral-routed": gguf.MODEL_ARCH.LLAMA,
    "stories260k-qwen2moe": gguf.MODEL_ARCH.QWEN2MOE,
    "stories260k-qwen3moe": gguf.MODEL_ARCH.QWEN3MOE,
}


def e4m3(t: torch.Tensor) -> np.ndarray:
    return t.view(torch.uint8).view(torch.float8_e4m3fn).float().numpy()


def dequant_format_a(packed: torch.Tensor, scales: torch.Tensor, s2: float) -> np.ndarray:
    """ModelOpt's NVFP4 decode: byte k holds weights 2k (low nibble) and 2k+1, float32."""
    p = packed.numpy()
    codes = np.stack([p & 0x0F, p >> 4], axis=-1).reshape(p.shape[0], -1)
    blocks = np.repeat(e4m3(scales), 16, axis=1)
    return (E2M1[codes] * blocks).astype(np.float32) * np.float32(s2)


def permute_rope(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute: rotate_half rows -> adjacent RoPE pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def as_f32(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy()


def gguf_name(hf: str, arch, n_layers: int):
    """(GGUF name, expert index or None) for a Hugging Face tensor, through gguf-py's map."""
    expert = None
    m = re.match(r"(.*\.experts)\.(\d+)\.(.*)$", hf)
    if m:
        hf, expert = f"{m.group(1)}.{m.group(3)}", int(m.group(2))
    name = gguf.get_tensor_name_map(arch, n_layers).get_name(hf, try_suffixes=(".weight", ".bias"))
    assert name is not None, f"gguf-py has no name for {hf}"
    return name, expert


def read_gguf(path: Path) -> dict:
    """name -> float32 values as gguf-py dequantizes them (NVFP4 times its .scale)."""
    reader = gguf.GGUFReader(path)
    raw = {t.name: t for t in reader.tensors}
    out = {}
    for name, t in raw.items():
        if name.endswith((".scale", ".input_scale")):
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if t.tensor_type == gguf.GGMLQuantizationType.NVFP4:
            stem = name.removesuffix(".weight")
            scale = np.asarray(raw[stem + ".scale"].data, np.float32)
            values = values * (scale.reshape(-1, 1, 1) if values.ndim == 3 else scale[0])
        out[name] = (t.tensor_type, values)
    return out


def add_value(out: dict, stacked: dict, name: str, expert, v: np.ndarray):
    """A tensor's expected values: whole, or one expert's slice of a stacked tensor."""
    if expert is None:
        out[name] = v
    else:
        stacked.setdefault(name, {})[expert] = v


def stack_experts(out: dict, stacked: dict) -> dict:
    """Experts stacked [E, N, K] in expert order, as llama.cpp reads them; returns out."""
    for name, experts in stacked.items():
        out[name] = np.stack([experts[e] for e in range(len(experts))])
    return out


def expected_from_checkpoints(src: Path, fmt_a: Path, arch) -> dict:
    """GGUF name -> float32 values: format A's NVFP4 decode where K % 64 == 0, else the source."""
    config = json.loads((src / "config.json").read_text())
    source, a = load_file(src / "model.safetensors"), load_file(fmt_a / "model.safetensors")
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    stacked, out = {}, {}
    for hf, t in source.items():
        module = hf.removesuffix(".weight")
        if hf.endswith(".weight") and f"{module}.weight_scale" in a and t.shape[1] % 64 == 0:
            v = dequant_format_a(a[hf], a[f"{module}.weight_scale"],
                                 a[f"{module}.weight_scale_2"].item())
            assert v.shape == tuple(t.shape)
        else:
            v = as_f32(t)
        name, expert = gguf_name(hf, arch, config["num_hidden_layers"])
        if arch == gguf.MODEL_ARCH.LLAMA and name.endswith(("attn_q.weight", "attn_k.weight")):
            v = permute_rope(v, heads if "attn_q" in name else kv_heads)
        add_value(out, stacked, name, expert, v)
    stack_experts(out, stacked)
    if arch in (gguf.MODEL_ARCH.QWEN2MOE, gguf.MODEL_ARCH.OLMOE) and "output.weight" not in out:
        out["output.weight"] = out["token_embd.weight"]  # their loaders require output.weight
    return out


def quantize(fp4kit, src: Path, out: Path, *args) -> Path:
    run_checked([fp4kit, "quantize", src, out, "--weights-only", *args, "--allow-destroyed"])
    return out


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, fp4kit, shared_data):
    root = tmp_path_factory.mktemp("gguf")
    cache = {}

    def get(name: str, kind: str) -> Path:
        """kind: gguf, a (ModelOpt format), b (compressed-tensors), a-as-gguf (ModelOpt format
        with the MLP rule --format gguf adds for Qwen2-MoE, so that both hold the same tensors)."""
        if (name, kind) not in cache:
            src = shared_data / "models" / name
            out = root / name / {"gguf": "m.gguf"}.get(kind, kind)
            out.parent.mkdir(parents=True, exist_ok=True)
            fmt = {"gguf": "gguf", "b": "compressed-tensors"}.get(kind, "modelopt")
            extra = (["--exclude", "*.mlp.*"]
                     if kind == "a-as-gguf" and name in MLP_SCALE_IGNORED else [])
            cache[(name, kind)] = quantize(fp4kit, src, out, "--format", fmt, *extra)
        return cache[(name, kind)]
    return get


def assert_bitwise(got: np.ndarray, want: np.ndarray, what: str):
    """Equal bit for bit, except that -0 and +0 are one value: ggml's E2M1 table (kvalues_fp4)
    decodes code 8 as +0 where ModelOpt's gives -0."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    got, want = got + np.float32(0), want.astype(np.float32) + np.float32(0)
    diff = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert diff.size == 0, (f"{what}: {diff.size} of {got.size} values differ, first at flat "
                            f"{diff[0]}: {got.flat[diff[0]]} != {want.flat[diff[0]]}")


def assert_same_tensors(got: dict, want: dict, label: str) -> int:
    """The GGUF's tensors (read_gguf) are the expected ones, each equal bit for bit; returns how
    many are NVFP4."""
    assert sorted(got) == sorted(want), (f"only in GGUF: {sorted(set(got) - set(want))}; "
                                         f"missing: {sorted(set(want) - set(got))}")
    for tensor, (ttype, values) in got.items():
        assert_bitwise(values, want[tensor], f"{label} {tensor} ({ttype.name})")
    return sum(ttype == gguf.GGMLQuantizationType.NVFP4 for ttype, _ in got.values())


@pytest.mark.parametrize("name", sorted(SHARED))
def test_gguf_equals_nvfp4_checkpoint_bit_for_bit(outputs, shared_data, name):
    src = shared_data / "models" / name
    got = read_gguf(outputs(name, "gguf"))
    want = expected_from_checkpoints(src, outputs(name, "a-as-gguf"), SHARED[name])
    n_nvfp4 = assert_same_tensors(got, want, name)
    for tensor, (ttype, values) in got.items():
        if tensor.endswith("_norm.weight") or values.ndim == 1 or "ffn_gate_inp" in tensor:
            assert ttype == gguf.GGMLQuantizationType.F32, f"{tensor}: {ttype.name}"
    assert n_nvfp4 >= 15, f"{name}: only {n_nvfp4} NVFP4 tensors"
    if name in MLP_SCALE_IGNORED:
        assert not any("ffn" in t and ty == gguf.GGMLQuantizationType.NVFP4
                       for t, (ty, _) in got.items())


def test_gguf_layout_and_metadata(outputs, shared_data):
    path = outputs("stories260k-qwen3moe", "gguf")
    reader = gguf.GGUFReader(path)
    t = {x.name: x for x in reader.tensors}
    # Experts stacked as llama.cpp reads them: ne = {K, N, E}; one global scale per expert.
    gate = t["blk.0.ffn_gate_exps.weight"]
    assert gate.tensor_type == gguf.GGMLQuantizationType.NVFP4
    assert list(gate.shape) == [64, 48, 4]
    assert list(t["blk.0.ffn_gate_exps.scale"].shape) == [4]
    # K = 48 (down_proj of an expert) is not a multiple of 64: kept in the source's BF16.
    assert t["blk.0.ffn_down_exps.weight"].tensor_type == gguf.GGMLQuantizationType.BF16
    assert "blk.0.ffn_down_exps.scale" not in t
    # Block scale bytes have bit 7 clear (the CUDA decoder reads it as a sign).
    raw = np.asarray(gate.data).reshape(-1, 36)
    assert not (raw[:, :4] & 0x80).any()

    f = reader.fields
    def field(key):
        return f[key].contents()
    assert field("general.architecture") == "qwen3moe"
    assert field("general.file_type") == gguf.LlamaFileType.MOSTLY_NVFP4
    config = json.loads((shared_data / "models/stories260k-qwen3moe/config.json").read_text())
    assert field("qwen3moe.block_count") == config["num_hidden_layers"]
    assert field("qwen3moe.expert_count") == config["num_experts"]
    assert field("qwen3moe.expert_used_count") == config["num_experts_per_tok"]
    assert field("qwen3moe.expert_feed_forward_length") == config["moe_intermediate_size"]
    assert field("qwen3moe.attention.head_count_kv") == config["num_key_value_heads"]
    assert np.float32(field("qwen3moe.attention.layer_norm_rms_epsilon")) == np.float32(
        config["rms_norm_eps"])
    # Tokenizer: the vocabulary in id order, byte pieces typed BYTE, specials CONTROL.
    tok = json.loads((shared_data / "models/stories260k-qwen3moe/tokenizer.json").read_text())
    by_id = {i: s for s, i in tok["model"]["vocab"].items()}
    tokens = field("tokenizer.ggml.tokens")
    assert tokens == [by_id[i] for i in range(len(by_id))]
    types = field("tokenizer.ggml.token_type")
    assert types[tokens.index("<0x41>")] == gguf.TokenType.BYTE
    assert types[1] == gguf.TokenType.CONTROL and types[0] == gguf.TokenType.UNKNOWN
    assert field("tokenizer.ggml.model") == "llama"
    assert field("tokenizer.ggml.bos_token_id") == 1 and field("tokenizer.ggml.eos_token_id") == 2
    # W4A16: llama.cpp must keep these products' activations in 8 bits.
    names = field("general.tensor_extra.name")
    assert "blk.0.ffn_gate_exps.weight" in names and all(
        v is False for v in field("general.tensor_extra.prec_a4"))


def nvfp4_raw(path: Path) -> dict:
    return {t.name: np.asarray(t.data).copy() for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("name", ["stories260k-llama", "stories260k-qwen2moe"])
def test_repack_of_nvfp4_checkpoints_is_lossless(fp4kit, outputs, shared_data, tmp_path, name):
    direct = nvfp4_raw(outputs(name, "gguf"))
    a_dir = outputs(name, "a")
    a = load_file(a_dir / "model.safetensors")
    for fmt in ("a", "b"):
        out = tmp_path / f"{fmt}.gguf"
        run_checked([fp4kit, "quantize", outputs(name, fmt), out, "--format", "gguf"])
        reader = gguf.GGUFReader(out)
        repacked = {t.name: t for t in reader.tensors}
        assert sorted(repacked) == sorted(direct), fmt
        for tname, t in repacked.items():
            d = direct[tname]
            if t.tensor_type == gguf.GGMLQuantizationType.NVFP4:
                assert np.array_equal(np.asarray(t.data), d), f"{fmt} {tname}: codes differ"
            elif tname.endswith(".scale") and fmt == "b":
                # compressed-tensors stores 1/s2: its reciprocal is s2 to within one rounding.
                np.testing.assert_allclose(np.asarray(t.data), d, rtol=1.2e-7, err_msg=tname)
            elif t.tensor_type == gguf.GGMLQuantizationType.F32 and d.dtype != np.float32:
                # An NVFP4 linear with K % 64 != 0: the direct GGUF kept the source's BF16, the
                # repack writes the checkpoint's exact F32 decode.
                pass
            else:
                assert np.array_equal(np.asarray(t.data), d), f"{fmt} {tname}"
        # K % 64 != 0 linears of the NVFP4 checkpoint (and an MLP llama.cpp would not scale):
        # F32, equal to its decode bit for bit.
        got = read_gguf(out)
        for module in [k.removesuffix(".weight_scale") for k in a if k.endswith(".weight_scale")]:
            w = a[module + ".weight"]
            unscaled = name in MLP_SCALE_IGNORED and ".mlp." in module
            if w.shape[1] * 2 % 64 == 0 and not unscaled:
                continue
            tname, expert = gguf_name(module + ".weight", SHARED[name], 5)
            ttype, values = got[tname]
            assert ttype == gguf.GGMLQuantizationType.F32, tname
            want = dequant_format_a(w, a[module + ".weight_scale"],
                                    a[module + ".weight_scale_2"].item())
            if fmt == "b":
                continue  # 1/(1/s2) may differ from s2 in the last bit
            assert_bitwise(values if expert is None else values[expert], want, f"{fmt} {module}")


def write_byte_tokenizer(d: Path, vocab_size: int):
    """A byte-level BPE tokenizer.json (Qwen2 split regex) with one token per byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b), cs.append(256 + n)
            n += 1
    vocab = {chr(c): i for i, c in enumerate(cs)}
    regex = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = {"version": "1.0", "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
                "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                "use_regex": False}]},
           "model": {"type": "BPE", "vocab": vocab, "merges": []}}
    assert len(vocab) <= vocab_size
    (d / "tokenizer.json").write_text(json.dumps(tok))


@pytest.mark.parametrize("family", ["llama", "qwen3_moe"])
def test_repack_of_modelopt_h100_export(fp4kit, tmp_path, family):
    """ModelOpt's own NVFP4 export (H100, python/golden): GGUF dequant == ModelOpt's decode."""
    golden = REPO / "python" / "golden" / "models" / family / "w4a4" / "modelopt"
    src = tmp_path / "modelopt"
    shutil.copytree(golden, src)
    config = json.loads((src / "config.json").read_text())
    write_byte_tokenizer(src, config["vocab_size"])
    out = tmp_path / "m.gguf"
    run_checked([fp4kit, "quantize", src, out, "--format", "gguf", "--allow-destroyed"])
    reader = gguf.GGUFReader(out)
    raw = {t.name: t for t in reader.tensors}
    got = read_gguf(out)
    m = load_file(src / "model.safetensors")
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen3_moe": gguf.MODEL_ARCH.QWEN3MOE}[family]
    n = 0
    for key in m:
        if not key.endswith(".weight_scale") or m[key].dim() != 2:
            continue
        module = key.removesuffix(".weight_scale")
        want = dequant_format_a(m[module + ".weight"], m[key], m[module + ".weight_scale_2"].item())
        tname, expert = gguf_name(module + ".weight", arch, config["num_hidden_layers"])
        if arch == gguf.MODEL_ARCH.LLAMA and tname.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config["num_attention_heads"] if "attn_q" in tname else config["num_key_value_heads"]
            want = permute_rope(want, heads)
        values = got[tname][1]
        assert_bitwise(values if expert is None else values[expert], want, module)
        if want.shape[1] % 64 == 0:
            stem = tname.removesuffix(".weight")
            ins = np.asarray(raw[stem + ".input_scale"].data)
            assert ins[0 if expert is None else expert] == m[module + ".input_scale"].item()
        n += 1
    assert n >= 8


def test_unsupported_family_and_bad_out_leave_nothing(fp4kit, tmp_path, shared_data):
    src = tmp_path / "src"
    shutil.copytree(shared_data / "models" / "stories260k-llama", src)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "deepseek_v3"
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "x.gguf"
    import subprocess
    proc = subprocess.run([str(fp4kit), "quantize", str(src), str(out), "--format", "gguf",
                           "--weights-only"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "deepseek2" in proc.stderr and "deepseek_v3" in proc.stderr, proc.stderr
    assert not out.exists() and not Path(str(out) + ".partial").exists()
    proc = subprocess.run([str(fp4kit), "quantize", str(shared_data / "models/stories260k-llama"),
                           str(tmp_path / "dir"), "--format", "gguf", "--weights-only"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and ".gguf" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [src]


def test_w4a4_input_scales_equal_format_a(fp4kit, shared_data, tmp_path):
    """W4A4: each NVFP4 tensor has an F32 .input_scale ([E] for stacked experts) equal to the
    ModelOpt-format checkpoint's input_scale of the same run, and no W4A16 prec_a4 marking."""
    src = shared_data / "models" / "stories260k-mixtral-routed"
    ids = tmp_path / "ids.u16"
    ids.write_bytes((shared_data / "text" / "tinystories_val.stories260k.u16").read_bytes()[:4096])
    stats = tmp_path / "stats.safetensors"
    run_checked([fp4kit, "calibrate", src, "--data", ids, "--samples", "4", "--seq-len", "64",
                 "-o", stats])
    out, a_dir = tmp_path / "m.gguf", tmp_path / "a"
    run_checked([fp4kit, "quantize", src, out, "--format", "gguf", "--stats", stats])
    run_checked([fp4kit, "quantize", src, a_dir, "--stats", stats])
    a = load_file(a_dir / "model.safetensors")
    reader = gguf.GGUFReader(out)
    raw = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert "general.tensor_extra.prec_a4" not in reader.fields
    checked = 0
    for key in a:
        if not key.endswith(".input_scale"):
            continue
        module = key.removesuffix(".input_scale")
        if a[module + ".weight"].shape[1] * 2 % 64:
            continue  # kept unquantized in the GGUF
        tname, expert = gguf_name(module + ".weight", gguf.MODEL_ARCH.LLAMA, 5)
        got = raw[tname.removesuffix(".weight") + ".input_scale"]
        assert got[0 if expert is None else expert] == a[key].item(), module
        assert got[0 if expert is None else expert] > 0
        checked += 1
    assert checked >= 40, checked


def test_byte_level_bpe_tokenizer_metadata(fp4kit, shared_data, tmp_path):
    """Qwen3's tokenizer.json (byte-level BPE), cut to its first 3,000 pieces (the merges among
    them and the 26 added tokens moved after them) so that gguf-py reads it in seconds: gpt2
    model, qwen2 pre-tokenizer, merges as "a b", added specials CONTROL, padding up to
    vocab_size UNUSED, chat template, eos/pad ids from tokenizer_config.json, bos from config."""
    src = tmp_path / "src"
    src.mkdir()
    base = shared_data / "models" / "stories260k-qwen3moe"
    full = json.loads((shared_data / "tokenizers" / "qwen3" / "tokenizer.json").read_text())
    keep = 3000
    vocab = {t: i for t, i in full["model"]["vocab"].items() if i < keep}
    merges = [m for m in full["model"]["merges"]
              if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    added = [dict(a, id=keep + k) for k, a in enumerate(full["added_tokens"])]
    tok = dict(full, added_tokens=added, model=dict(full["model"], vocab=vocab, merges=merges))
    (src / "tokenizer.json").write_text(json.dumps(tok))
    shutil.copy(shared_data / "tokenizers" / "qwen3" / "tokenizer_config.json", src)
    vocab_size = keep + 64
    tensors = load_file(base / "model.safetensors")
    tensors["model.embed_tokens.weight"] = torch.zeros(vocab_size, 64, dtype=torch.bfloat16)
    from safetensors.torch import save_file
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((base / "config.json").read_text())
    config["vocab_size"] = vocab_size
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "m.gguf"
    run_checked([fp4kit, "quantize", src, out, "--format", "gguf", "--weights-only", "--allow-destroyed"])
    f = gguf.GGUFReader(out).fields

    def field(key):
        return f[key].contents()
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "qwen2"
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    assert len(tokens) == vocab_size
    for text, i in vocab.items():
        assert tokens[i] == text and types[i] == gguf.TokenType.NORMAL
    for a in added:
        assert tokens[a["id"]] == a["content"]
        assert types[a["id"]] == (gguf.TokenType.CONTROL if a["special"]
                                  else gguf.TokenType.USER_DEFINED)
    assert tokens[-1] == f"[PAD{vocab_size - 1}]"
    assert all(t == gguf.TokenType.UNUSED for t in types[keep + len(added):])
    assert len(merges) > 1000
    assert field("tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    assert field("tokenizer.chat_template") == cfg["chat_template"]
    assert tokens[field("tokenizer.ggml.eos_token_id")] == cfg["eos_token"]
    assert tokens[field("tokenizer.ggml.padding_token_id")] == cfg["pad_token"]
    # tokenizer_config.json has no bos_token: config.json's bos_token_id, as gguf-py's SpecialVocab.
    assert field("tokenizer.ggml.bos_token_id") == config["bos_token_id"]
    assert field("tokenizer.ggml.add_bos_token") is False


def test_router_normalization_llama_cpp_cannot_express_is_refused(fp4kit, tmp_path, shared_data):
    """llama.cpp's qwen3moe always renormalizes the top-k router weights: a Qwen3-MoE config with
    norm_topk_prob false and top-2 of 4 experts would run as another function, so it is refused
    (stories260k-qwen3moe itself uses all 4 experts, where both are the same)."""
    src = tmp_path / "src"
    shutil.copytree(shared_data / "models" / "stories260k-qwen3moe", src)
    config = json.loads((src / "config.json").read_text())
    assert config["norm_topk_prob"] is False
    config["num_experts_per_tok"] = 2
    (src / "config.json").write_text(json.dumps(config))
    import subprocess
    proc = subprocess.run([str(fp4kit), "quantize", str(src), str(tmp_path / "x.gguf"),
                           "--format", "gguf", "--weights-only"], capture_output=True, text=True)
    assert proc.returncode == 1 and "norm_topk_prob" in proc.stderr, proc.stderr
    assert not (tmp_path / "x.gguf").exists()


def write_gguf_with_gguf_py(path: Path, scale_bytes: np.ndarray, with_scale: bool = True):
    """A 2-block NVFP4 GGUF written by gguf-py's own GGUFWriter (as llama.cpp's converter does)."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_tokenizer_model("llama")
    w.add_token_list(["a", "b", "c", "d"])
    raw = np.zeros((2, 36), np.uint8)
    raw[:, :4] = scale_bytes.reshape(2, 4)
    raw[:, 4:] = 0x21
    w.add_tensor("token_embd.weight", np.zeros((4, 64), np.float32))
    w.add_tensor("blk.0.attn_q.weight", raw, raw_dtype=gguf.GGMLQuantizationType.NVFP4)
    if with_scale:
        w.add_tensor("blk.0.attn_q.scale", np.array([0.25], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_verify_reads_gguf_py_files_and_finds_their_nvfp4_faults(fp4kit, tmp_path):
    """`fp4kit verify X.gguf` on files gguf-py wrote: a sound one passes; an NVFP4 weight without
    its .scale (llama.cpp would run it unscaled) and a block scale with bit 7 set (CPU and CUDA
    decode it differently) fail with exit 1, naming the tensor."""
    import subprocess

    def verify(path):
        return subprocess.run([str(fp4kit), "verify", str(path)], capture_output=True, text=True)
    good = np.full(8, 0x38, np.uint8)
    write_gguf_with_gguf_py(tmp_path / "good.gguf", good)
    proc = verify(tmp_path / "good.gguf")
    assert proc.returncode == 0 and "passed" in proc.stdout, proc.stdout + proc.stderr

    write_gguf_with_gguf_py(tmp_path / "noscale.gguf", good, with_scale=False)
    proc = verify(tmp_path / "noscale.gguf")
    assert proc.returncode == 1, proc.stdout
    assert "blk.0.attn_q.weight" in proc.stdout and ".scale" in proc.stdout

    bad = good.copy()
    bad[5] = 0xB8
    write_gguf_with_gguf_py(tmp_path / "sign.gguf", bad)
    proc = verify(tmp_path / "sign.gguf")
    assert proc.returncode == 1 and "bit 7" in proc.stdout and "block 1" in proc.stdout, proc.stdout


@pytest.mark.parametrize("key", ["rope_scaling", "rope_parameters"])
def test_llama3_rope_scaling_becomes_rope_freqs(fp4kit, tmp_path, shared_data, key):
    """Llama-3 RoPE scaling (config rope_scaling, or transformers 5's rope_parameters): the
    rope_freqs.weight factors llama.cpp reads, equal to convert_hf_to_gguf's float32 formula
    (re-implemented here with torch as the converter does)."""
    import math
    src = tmp_path / "src"
    shutil.copytree(shared_data / "models" / "stories260k-llama", src)
    config = json.loads((src / "config.json").read_text())
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 1024}
    if key == "rope_parameters":
        rope["rope_theta"] = config.pop("rope_theta", 10000.0)
    config[key] = rope
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "m.gguf"
    run_checked([fp4kit, "quantize", src, out, "--format", "gguf", "--weights-only", "--allow-destroyed"])
    t = {x.name: x for x in gguf.GGUFReader(out).tensors}
    got = np.asarray(t["rope_freqs.weight"].data, np.float32)

    dim, base = config["head_dim"], 10000.0
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    low_wl, high_wl = 1024 / 1.0, 1024 / 4.0
    want = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wl:
            want.append(1)
        elif wavelen > low_wl:
            want.append(8.0)
        else:
            smooth = (1024 / wavelen - 1.0) / (4.0 - 1.0)
            want.append(1 / ((1 - smooth) / 8.0 + smooth))
    want = torch.tensor(want, dtype=torch.float32).numpy()
    assert len({1.0, 8.0} | set(want.tolist())) == 3  # one factor between the two regimes
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_gguf_from_fp8_source_equals_format_a(fp4kit, tmp_path, shared_data):
    """An FP8 block-scaled source (fp4kit-fp8-cast of stories260k-llama, DeepSeek-V3 style):
    decoded in the stream and quantized, the GGUF's NVFP4 tensors equal the ModelOpt-format
    output of the same source bit for bit, and the kept FP8 down_proj (K = 172) is the same BF16
    decode in both."""
    from conftest import require_executable, tool_path
    src = tmp_path / "fp8"
    run_checked([require_executable(tool_path("fp8-cast")),
                 shared_data / "models" / "stories260k-llama", src])
    shutil.copy(shared_data / "models" / "stories260k-llama" / "tokenizer.json", src)
    out, a_dir = tmp_path / "m.gguf", tmp_path / "a"
    quantize(fp4kit, src, out, "--format", "gguf")
    quantize(fp4kit, src, a_dir)
    a = load_file(a_dir / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    got = read_gguf(out)
    checked = {"NVFP4": 0, "BF16": 0}
    for key, t in a.items():
        if key.endswith((".weight_scale", ".weight_scale_2", ".input_scale")):
            continue
        module = key.removesuffix(".weight")
        tname, _ = gguf_name(key, gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
        if module + ".weight_scale" in a:
            want = dequant_format_a(t, a[module + ".weight_scale"],
                                    a[module + ".weight_scale_2"].item())
        else:
            want = as_f32(t)
        if tname.endswith(("attn_q.weight", "attn_k.weight")):
            want = permute_rope(want, config["num_attention_heads"] if "attn_q" in tname
                                else config["num_key_value_heads"])
        ttype, values = got[tname]
        assert_bitwise(values, want, f"fp8 {key}")
        if ttype.name in checked:
            checked[ttype.name] += 1
    assert checked["NVFP4"] == 30 and checked["BF16"] >= 5, checked  # 5 x down_proj from FP8
