"""fp4kit's source-format decoders (issue 8) against the reference dequantizers of transformers:
FP8 E4M3 with 128x128 weight_scale_inv blocks (finegrained_fp8._dequantize_fp8_weight, the
DeepSeek-V3 / Qwen3-FP8 path) and gpt-oss MXFP4 (mxfp4._convert_moe_packed_tensors).

fp4kit side: build/fp4kit-source-decode (tools/source_decode_main.cpp) on raw files.
"""
import subprocess

import numpy as np
import pytest
import torch

from conftest import require_executable, tool_path

fp8_mod = pytest.importorskip("transformers.integrations.finegrained_fp8")
mxfp4_mod = pytest.importorskip("transformers.integrations.mxfp4")


@pytest.fixture(scope="module")
def decode_tool():
    return require_executable(tool_path("source-decode"))


def run(tool, *args):
    r = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("n,k", [(256, 256), (300, 200), (130, 1000), (7, 129)])
def test_fp8_block_matches_transformers(decode_tool, tmp_path, n, k):
    g = torch.Generator().manual_seed(n * 1000 + k)
    # Every E4M3 code except NaN occurs, so the whole decode table is compared.
    codes = torch.randint(0, 256, (n, k), generator=g, dtype=torch.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x38
    fp8 = codes.view(torch.float8_e4m3fn)
    gr, gc = -(-n // 128), -(-k // 128)
    scale_inv = torch.rand(gr, gc, generator=g) * 1e-2 + 1e-4
    theirs = fp8_mod._dequantize_fp8_weight(fp8, scale_inv, [128, 128], torch.float32)

    (tmp_path / "c").write_bytes(codes.numpy().tobytes())
    (tmp_path / "s").write_bytes(scale_inv.numpy().astype("<f4").tobytes())
    run(decode_tool, "fp8", n, k, 128, 128, tmp_path / "c", tmp_path / "s", tmp_path / "o")
    ours = np.frombuffer((tmp_path / "o").read_bytes(), dtype="<f4").reshape(n, k)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.numpy().view(np.uint32))


@pytest.mark.parametrize("experts,rows,groups", [(2, 6, 3), (3, 64, 4)])
def test_mxfp4_matches_transformers(decode_tool, tmp_path, experts, rows, groups):
    g = torch.Generator().manual_seed(experts * 100 + rows)
    blocks = torch.randint(0, 256, (experts, rows, groups, 16), generator=g, dtype=torch.uint8)
    # Scales over the range where every product stays a normal float32 (2^-100 .. 2^100).
    scales = torch.randint(27, 228, (experts, rows, groups), generator=g, dtype=torch.uint8)
    # transformers returns [E, G*32, rows] (transposed to gpt-oss's [E, H, 2I] parameter layout).
    theirs = mxfp4_mod._convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
    theirs = theirs.transpose(1, 2).contiguous().numpy()

    total = experts * rows * groups
    (tmp_path / "b").write_bytes(blocks.numpy().tobytes())
    (tmp_path / "s").write_bytes(scales.numpy().tobytes())
    run(decode_tool, "mxfp4", total, tmp_path / "b", tmp_path / "s", tmp_path / "o")
    ours = np.frombuffer((tmp_path / "o").read_bytes(), dtype="<f4").reshape(experts, rows, groups * 32)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_mxfp4_every_e8m0_byte_and_block_byte_matches_transformers(decode_tool, tmp_path):
    """All 255 finite E8M0 scales (2^-127 .. 2^127: float32 subnormal products at the bottom,
    6 * 2^127 overflowing to inf at the top) times all 256 block bytes, bit for bit."""
    rows = 255 * 16
    blocks = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(1, 255, 1, 1)
    blocks = blocks.reshape(1, rows, 1, 16)
    scales = (torch.arange(rows) // 16).to(torch.uint8).reshape(1, rows, 1)  # row r: byte r // 16
    theirs = mxfp4_mod._convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
    theirs = theirs.transpose(1, 2).contiguous().numpy()
    assert np.isinf(theirs).any() and (np.abs(theirs[theirs != 0]) < np.float32(2.0**-126)).any()

    (tmp_path / "b").write_bytes(blocks.numpy().tobytes())
    (tmp_path / "s").write_bytes(scales.numpy().tobytes())
    run(decode_tool, "mxfp4", rows, tmp_path / "b", tmp_path / "s", tmp_path / "o")
    ours = np.frombuffer((tmp_path / "o").read_bytes(), dtype="<f4").reshape(theirs.shape)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))
