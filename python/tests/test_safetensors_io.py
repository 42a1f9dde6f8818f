"""io conformance: fp4kit's safetensors reader and writer against the official `safetensors`
library (torch API) and transformers `from_pretrained`.

fp4kit side: build/fp4kit-st-copy (tools/st_copy_main.cpp), which copies a checkpoint tensor by
tensor through Checkpoint + CheckpointWriter (sharded by --max-shard-size, atomic OutputDir) and
dumps the bytes of every tensor as fp4kit's reader sees them.
"""
import json
import struct
import subprocess

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import require_executable, run_checked, tool_path

# Every dtype fp4kit reads (issue 3) with the torch dtype safetensors maps it to.
DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "I32": torch.int32, "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16,
    "F32": torch.float32, "F64": torch.float64, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2, "F8_E8M0": torch.float8_e8m0fnu,
}


@pytest.fixture(scope="module")
def st_copy():
    return require_executable(tool_path("st-copy"))


def raw_bytes(t: torch.Tensor) -> bytes:
    """The tensor's bytes, little-endian, row-major: compares NaNs and -0.0 exactly."""
    t = t.contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def assert_same_tensors(ours: dict, theirs: dict, what: str):
    assert sorted(ours) == sorted(theirs), f"{what}: tensor names differ"
    for name in theirs:
        a, b = ours[name], theirs[name]
        assert a.dtype == b.dtype, f"{what}: {name} dtype {a.dtype} vs {b.dtype}"
        assert tuple(a.shape) == tuple(b.shape), f"{what}: {name} shape {a.shape} vs {b.shape}"
        assert raw_bytes(a) == raw_bytes(b), f"{what}: {name} bytes differ"


def every_dtype_tensors() -> dict:
    """One tensor per dtype with every bit pattern where it matters (all 256 F8 codes, NaNs,
    -0.0, infinities), plus 0-d and zero-size tensors and one large enough to span shards."""
    g = torch.Generator().manual_seed(1)
    out = {}
    for name, dt in DTYPES.items():
        if dt == torch.bool:
            t = torch.randint(0, 2, (7, 5), generator=g).bool()
        elif dt.is_floating_point and dt.itemsize == 1:
            t = torch.arange(256, dtype=torch.uint8).view(dt).reshape(16, 16)
        elif dt.is_floating_point:
            t = torch.randn(33, 17, generator=g).to(dt)
            t.view(-1)[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0]).to(dt)
        else:
            info = torch.iinfo(dt)
            t = torch.randint(max(info.min, -2**62), min(info.max, 2**62), (9, 3), dtype=dt,
                              generator=g)
        out[f"t.{name.lower()}"] = t
    out["scalar.f32"] = torch.tensor(3.25)            # 0-d, like weight_scale_2
    out["scalar.f8"] = torch.tensor(448.0).to(torch.float8_e4m3fn)
    out["empty.bf16"] = torch.zeros(0, 64, dtype=torch.bfloat16)  # zero-size tensors are legal
    out["big.bf16"] = torch.randn(256, 512, generator=g).to(torch.bfloat16)  # 256 KiB
    return out


def header_of(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8:8 + n])


def load_checkpoint_dir(d) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_fp4kit_written_sharded_loads_in_safetensors(st_copy, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tensors = every_dtype_tensors()
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt", "note": "kept"})
    out = tmp_path / "out"
    max_shard = 6_000
    run_checked([st_copy, "copy", src, out, "--max-shard-size", max_shard])

    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    n = len(shards)
    assert n >= 3, shards
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert set(index["weight_map"]) == set(tensors)
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(len(raw_bytes(t)) for t in tensors.values())

    loaded = {}
    for shard in shards:
        path = out / shard
        header_len, header = header_of(path)
        assert (8 + header_len) % 8 == 0, f"{shard}: data area not 8-byte aligned"
        data_bytes = path.stat().st_size - 8 - header_len
        names = [k for k in header if k != "__metadata__"]
        assert data_bytes <= max_shard or len(names) == 1, f"{shard}: {data_bytes} bytes"
        with safe_open(path, "pt") as f:
            assert f.metadata() == {"format": "pt", "note": "kept"}
            for k in f.keys():
                assert index["weight_map"][k] == shard
                loaded[k] = f.get_tensor(k)
    assert_same_tensors(loaded, tensors, "fp4kit-written shards")


def test_fp4kit_written_single_file_loads_in_safetensors(st_copy, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tensors = every_dtype_tensors()
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    run_checked([st_copy, "copy", src, tmp_path / "out"])  # default 5 GB: one file, no index
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors"]
    assert_same_tensors(load_file(tmp_path / "out" / "model.safetensors"), tensors, "single file")


def test_fp4kit_writer_is_deterministic(st_copy, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save_file(every_dtype_tensors(), src / "model.safetensors", metadata={"format": "pt"})
    for o in ("a", "b"):
        run_checked([st_copy, "copy", src, tmp_path / o, "--max-shard-size", 100_000])
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def fp4kit_dump(st_copy, src, dump_dir) -> tuple[dict, dict]:
    """Every tensor as fp4kit's reader sees it: {name: (dtype name, shape, bytes, shard)}."""
    run_checked([st_copy, "dump", src, dump_dir])
    manifest = json.loads((dump_dir / "manifest.json").read_text())
    return manifest["metadata"], {
        t["name"]: (t["dtype"], tuple(t["shape"]), (dump_dir / t["file"]).read_bytes(), t["shard"])
        for t in manifest["tensors"]}


def test_safetensors_written_reads_identically_in_fp4kit(st_copy, tmp_path):
    tensors = every_dtype_tensors()
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt", "k": "v"})
    metadata, seen = fp4kit_dump(st_copy, tmp_path / "x.safetensors", tmp_path / "dump")
    assert metadata == {"format": "pt", "k": "v"}
    assert sorted(seen) == sorted(tensors)
    torch_to_name = {v: k for k, v in DTYPES.items()}
    for name, t in tensors.items():
        dtype, shape, data, _ = seen[name]
        assert dtype == torch_to_name[t.dtype], name
        assert shape == tuple(t.shape), name
        assert data == raw_bytes(t), f"{name}: bytes differ"


def test_transformers_sharded_checkpoint_reads_in_fp4kit(st_copy, tmp_path):
    """A sharded set with index written by transformers' save_pretrained: every tensor found in
    the shard the index names, with the bytes safetensors reads."""
    model = tiny_llama()
    model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    _, seen = fp4kit_dump(st_copy, tmp_path / "hf", tmp_path / "dump")
    theirs = load_checkpoint_dir(tmp_path / "hf")
    assert sorted(seen) == sorted(theirs)
    for name, t in theirs.items():
        assert seen[name][3] == index["weight_map"][name], name
        assert seen[name][2] == raw_bytes(t), name


def test_unsupported_dtype_is_a_clear_error(st_copy, tmp_path):
    save_file({"a": torch.zeros(4, dtype=torch.uint16)}, tmp_path / "u16.safetensors")
    proc = subprocess.run([str(st_copy), "dump", str(tmp_path / "u16.safetensors"),
                           str(tmp_path / "d")], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "U16" in proc.stderr


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def tiny_qwen3_moe():
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                         moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, max_position_embeddings=128)
    return Qwen3MoeForCausalLM(cfg).to(torch.bfloat16).eval()


@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen3_moe], ids=["llama", "qwen3_moe"])
def test_tiny_model_through_fp4kit_writer_loads_in_transformers(st_copy, tmp_path, make):
    from transformers import AutoModelForCausalLM
    model = make()
    model.save_pretrained(tmp_path / "src")
    out = tmp_path / "out"
    run_checked([st_copy, "copy", tmp_path / "src", out, "--max-shard-size", 60_000])
    assert len(list(out.glob("model-*-of-*.safetensors"))) >= 3
    assert (out / "config.json").read_bytes() == (tmp_path / "src" / "config.json").read_bytes()

    reloaded, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16,
                                                          output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info[kind], f"{kind}: {info[kind]}"
    assert_same_tensors(reloaded.state_dict(), model.state_dict(), "from_pretrained")
    # Logits against the source loaded the same way (a freshly built model keeps e.g. RoPE
    # buffers in another dtype, so its logits differ by rounding, copy or not).
    original = AutoModelForCausalLM.from_pretrained(tmp_path / "src", dtype=torch.bfloat16)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, original(ids).logits)


def test_shared_moe_checkpoint_roundtrip(st_copy, tmp_path, shared_data):
    """A real checkpoint of ../shared/data (Qwen3-MoE layout) copied by fp4kit into shards loads in
    transformers with the same state dict as the original."""
    from transformers import AutoModelForCausalLM
    src = shared_data / "models" / "stories260k-qwen3moe"
    out = tmp_path / "out"
    run_checked([st_copy, "copy", src, out, "--max-shard-size", 150_000])
    assert len(list(out.glob("model-*-of-*.safetensors"))) >= 3
    assert (out / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    a = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    b, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16,
                                                   output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert_same_tensors(b.state_dict(), a.state_dict(), "stories260k-qwen3moe")
