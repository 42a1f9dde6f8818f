"""Codec conformance: fp4kit's NVFP4 codec against ModelOpt's own NVFP4 code, byte for byte.

The reference is nvidia-modelopt's NVFP4QTensor.quantize (modelopt/torch/quantization/qtensor/
nvfp4_tensor.py), the very function its HF export calls, run here on CPU. On CPU ModelOpt computes
s2 = amax / 2688 ("CPU form", NVFP4-SPEC.md section 2), so fp4kit runs with --scale-form cpu for the
tests where ModelOpt computes s2 itself. The GPU form (fp4kit's default) is tested by handing
ModelOpt the s2 the spec defines for it, computed here independently with numpy float32; the block
scale and element math is the same on both devices (true tensor/tensor divisions).

fp4kit side: build/fp4kit-nvfp4 (tools/nvfp4_main.cpp), both the dispatched fast path and the
scalar reference kernel (--ref).
"""
import json
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from conftest import require_executable, run_checked, tool_path
from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

TORCH_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
INT_VIEW = {"bf16": torch.int16, "f16": torch.int16, "f32": torch.int32}
R_GPU = np.float32(1.0) / np.float32(2688.0)  # (float)(1.0f/2688.0f), spec section 2


@dataclass
class Encoded:
    weight: bytes
    weight_scale: bytes
    weight_scale_2: bytes  # 4 bytes, little-endian float32


def modelopt_encode(x: torch.Tensor, s2: np.float32 | None = None) -> Encoded:
    """ModelOpt's NVFP4 on CPU; s2=None lets ModelOpt compute it from the tensor (CPU form)."""
    wsf2 = None if s2 is None else torch.tensor(np.float32(s2))
    q, sf, s2_out = NVFP4QTensor.quantize(x.clone(), 16, weights_scaling_factor_2=wsf2)
    assert sf.dtype == torch.float8_e4m3fn
    return Encoded(
        q._quantized_data.contiguous().numpy().tobytes(),
        sf.contiguous().view(torch.uint8).numpy().tobytes(),
        s2_out.to(torch.float32).reshape(()).numpy().tobytes(),
    )


@pytest.fixture(scope="module")
def nvfp4_tool():
    return require_executable(tool_path("nvfp4"))


@pytest.fixture
def fp4kit_encode(nvfp4_tool, tmp_path):
    counter = iter(range(1 << 30))

    def encode(x: torch.Tensor, dtype: str, form: str = "cpu", s2: np.float32 | None = None,
               ref: bool = False) -> Encoded:
        i = next(counter)
        src = tmp_path / f"in{i}.bin"
        out = tmp_path / f"out{i}"
        src.write_bytes(x.contiguous().view(INT_VIEW[dtype]).numpy().tobytes())
        cmd = [nvfp4_tool, "--in", src, "--rows", x.shape[0], "--cols", x.shape[1],
               "--dtype", dtype, "--out", out, "--scale-form", form]
        if s2 is not None:
            cmd += ["--s2-bits", f"{np.float32(s2).view(np.uint32):08x}"]
        if ref:
            cmd.append("--ref")
        json.loads(run_checked(cmd).stdout)
        return Encoded((out / "weight.bin").read_bytes(), (out / "weight_scale.bin").read_bytes(),
                       (out / "weight_scale_2.bin").read_bytes())

    return encode


def first_difference(a: bytes, b: bytes, row_bytes: int) -> str:
    if len(a) != len(b):
        return f"lengths differ: {len(a)} vs {len(b)}"
    x, y = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    bad = np.flatnonzero(x != y)
    i = int(bad[0])
    return (f"{bad.size} of {x.size} bytes differ; first at row {i // row_bytes}, byte "
            f"{i % row_bytes}: fp4kit 0x{x[i]:02x}, ModelOpt 0x{y[i]:02x}")


def assert_same(ours: Encoded, theirs: Encoded, cols: int, what: str):
    s2_ours = np.frombuffer(ours.weight_scale_2, np.float32)[0]
    s2_theirs = np.frombuffer(theirs.weight_scale_2, np.float32)[0]
    assert ours.weight_scale_2 == theirs.weight_scale_2, (
        f"{what}: weight_scale_2 fp4kit {s2_ours!r} (0x{s2_ours.view(np.uint32):08x}) vs "
        f"ModelOpt {s2_theirs!r} (0x{s2_theirs.view(np.uint32):08x})")
    assert ours.weight_scale == theirs.weight_scale, (
        f"{what}: weight_scale " + first_difference(ours.weight_scale, theirs.weight_scale, cols // 16))
    assert ours.weight == theirs.weight, (
        f"{what}: weight " + first_difference(ours.weight, theirs.weight, cols // 2))


def to_torch(a: np.ndarray, dtype: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(TORCH_DTYPES[dtype])


def gaussian(rows, cols, seed, std=0.02):
    return np.random.default_rng(seed).normal(0.0, std, (rows, cols)).astype(np.float32)


def heavy_tailed(rows, cols, seed):
    # Student-t with 2 degrees of freedom: outliers far above the typical block, as real weights have.
    return (np.random.default_rng(seed).standard_t(2.0, (rows, cols)) * 0.01).astype(np.float32)


def wide_range(rows, cols, seed):
    # Rows spanning 12 orders of magnitude: most blocks end up with tiny or subnormal scales.
    rng = np.random.default_rng(seed)
    row_scale = 10.0 ** rng.uniform(-8, 4, (rows, 1))
    return (rng.normal(0, 1, (rows, cols)) * row_scale).astype(np.float32)


def edge_blocks(rows, cols, seed):
    """All-zero blocks, single-element blocks, tiny blocks (s < 2^-9: clamped to 0x01) and blocks
    whose scale falls in the E4M3 subnormal range, under a tensor amax of about 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (rows, cols)).astype(np.float32)
    x[0, 0] = 1.0
    blocks = x.reshape(rows, cols // 16, 16)
    factors = [0.0, 1e-9, 1e-7, 1e-6, 3e-6, 5e-6, 1e-5, 2e-5, 3e-5, 1e-4]
    for r in range(rows):
        for b in range(cols // 16):
            if (r, b) == (0, 0):
                continue
            kind = (r * 7 + b) % (len(factors) + 2)
            if kind < len(factors):
                blocks[r, b] = rng.normal(0, 1, 16) * factors[kind]
            elif kind == len(factors):
                blocks[r, b] = 0.0
                blocks[r, b, rng.integers(16)] = rng.choice([-1, 1]) * 10.0 ** rng.uniform(-7, -1)
    x[1, 5] = -0.0
    return x


CASES = {
    # name: (maker(rows, cols, seed), rows, cols)
    "one_block": (gaussian, 1, 16),
    "gaussian_3x48": (gaussian, 3, 48),
    "gaussian_33x160": (gaussian, 33, 160),
    "gaussian_128x256": (gaussian, 128, 256),
    "gaussian_512x2048": (gaussian, 512, 2048),
    "heavy_tailed_64x512": (heavy_tailed, 64, 512),
    "wide_range_64x256": (wide_range, 64, 256),
    "edge_blocks_24x320": (edge_blocks, 24, 320),
}


@pytest.mark.parametrize("dtype", ["bf16", "f32", "f16"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kernel", ["fast", "ref"])
def test_random_matrices_match_modelopt_cpu_form(fp4kit_encode, case, dtype, kernel):
    maker, rows, cols = CASES[case]
    a = maker(rows, cols, seed=zlib.crc32(f"{case}/{dtype}".encode()))
    if dtype == "f16" and case == "wide_range_64x256":
        a = np.clip(a, -6e4, 6e4)  # fp16 cannot hold the top of the range
    x = to_torch(a, dtype)
    assert_same(fp4kit_encode(x, dtype, "cpu", ref=(kernel == "ref")), modelopt_encode(x), cols,
                f"{case} {dtype} {kernel}")


def amax_sweep(count, seed):
    """Log-uniform tensor amax values over [1e-6, 1e4], each made into a small bf16 matrix whose
    max |w| is that value. About a fifth of them give different s2 bits in the CPU and GPU forms."""
    rng = np.random.default_rng(seed)
    out = []
    for amax in 10.0 ** rng.uniform(-6, 4, count):
        a = rng.normal(0, 1, (4, 64)).astype(np.float32)
        a = a / np.abs(a).max() * np.float32(amax)
        out.append(to_torch(a, "bf16"))
    return out


def test_amax_sweep_cpu_form(fp4kit_encode):
    xs = amax_sweep(48, seed=7)
    forms_differ = 0
    for i, x in enumerate(xs):
        amax = np.float32(x.abs().max().float().item())
        forms_differ += (amax / np.float32(2688.0)) != (amax * R_GPU)
        assert_same(fp4kit_encode(x, "bf16", "cpu"), modelopt_encode(x), 64, f"sweep #{i} amax {amax}")
    # The sweep only proves the CPU form if it includes amax values where the two forms disagree.
    assert forms_differ >= 3, forms_differ


def test_amax_sweep_gpu_form(fp4kit_encode):
    """fp4kit's default GPU form: s2 = amax * (float)(1/2688) computed here with numpy float32,
    handed to ModelOpt; the rest of ModelOpt's math is device-independent."""
    for i, x in enumerate(amax_sweep(48, seed=8)):
        s2_gpu = np.float32(x.abs().max().float().item()) * R_GPU
        assert_same(fp4kit_encode(x, "bf16", "gpu"), modelopt_encode(x, s2_gpu), 64,
                    f"gpu sweep #{i}")


def test_gpu_and_cpu_forms_give_different_bytes_somewhere(fp4kit_encode):
    """Guards the test itself: if fp4kit ignored --scale-form, the sweeps above could not tell."""
    differ = 0
    for x in amax_sweep(48, seed=7):
        differ += fp4kit_encode(x, "bf16", "cpu") != fp4kit_encode(x, "bf16", "gpu")
    assert differ >= 3


def test_shared_group_scale(fp4kit_encode):
    """A fusion-group member quantized against the group's s2 (from a larger amax), as q/k/v and
    gate/up are: fp4kit with --s2-bits against ModelOpt given the same s2."""
    x = to_torch(gaussian(32, 128, seed=3), "bf16")
    amax = np.float32(x.abs().max().float().item())
    for group_amax in [amax, amax * np.float32(1.7), amax * np.float32(37.0), np.float32(448.0)]:
        s2 = np.float32(group_amax) / np.float32(2688.0)
        assert_same(fp4kit_encode(x, "bf16", "cpu", s2=s2), modelopt_encode(x, s2), 128,
                    f"group amax {group_amax}")


def planted_ties() -> np.ndarray:
    """Exact ties, in bf16, for E2M1 element rounding and E4M3 scale rounding.

    The tensor amax is 168 so the CPU-form s2 is exactly 168/2688 = 1/16 and 6*s2 = 0.375. A block
    with max 0.375 * 2^k then has scale exactly 2^k and element step d = 2^k / 16, a power of two,
    so t * d is exact for every E2M1 decision boundary t: each element lands exactly on a tie.
    """
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    rows = []
    # Row 0 holds the tensor max: scale 448 (0x7E), d = 28; every tie on both signs.
    rows.append([168.0] + [s * t * 28.0 for t in ties for s in (1, -1)] + [-0.0])
    for k in range(-9, 9):  # scales 2^-9 (subnormal 0x01) .. 2^8
        d = 2.0 ** k / 16
        rows.append([6 * d] + [s * t * d for t in ties for s in (1, -1)] + [-0.125 * d])
    # E4M3 ties of the block scale s = bamax / 0.375: midpoints between neighbouring E4M3 values,
    # normal (8.5 -> 8, 9.5 -> 10, 0.5625 -> 0.5) and subnormal (1.5 * 2^-9 -> 2^-8,
    # 2.5 * 2^-9 -> 2^-8), and s below the smallest subnormal (clamped to 2^-9).
    for s in [8.5, 9.5, 0.5625, 1.5 * 2.0**-9, 2.5 * 2.0**-9, 0.25 * 2.0**-9, 300.0]:
        bamax = s * 0.375
        rows.append([bamax] + [bamax * f for f in np.linspace(-0.9, 0.9, 15)])
    a = np.array(rows, dtype=np.float64)
    a = np.concatenate([a, a[:, ::-1]], axis=1)  # K = 32: the same blocks mirrored
    exact = to_torch(a.astype(np.float32), "bf16").double().numpy()
    # Tie rows must be exactly representable in bf16, or they would not be ties.
    assert np.array_equal(exact[: 19], a[: 19]), "planted ties not representable in bf16"
    return a.astype(np.float32)


def test_planted_ties(fp4kit_encode):
    a = planted_ties()
    for dtype in ["bf16", "f32", "f16"]:
        x = to_torch(a, dtype)
        mo = modelopt_encode(x)
        assert np.frombuffer(mo.weight_scale_2, np.float32)[0] == np.float32(1 / 16)
        for ref in (False, True):
            assert_same(fp4kit_encode(x, dtype, "cpu", ref=ref), mo, a.shape[1],
                        f"planted ties {dtype} ref={ref}")


def test_subnormal_fp32_inputs(fp4kit_encode):
    """fp32 subnormal weights (no flush-to-zero on either side) next to normal ones."""
    a = gaussian(8, 64, seed=11)
    a[2:6, :32] = np.random.default_rng(12).normal(0, 1e-39, (4, 32)).astype(np.float32)
    a[6, :] = np.float32(1e-45) * np.arange(-32, 32, dtype=np.float32)
    x = to_torch(a, "f32")
    assert_same(fp4kit_encode(x, "f32", "cpu"), modelopt_encode(x), 64, "fp32 subnormals")


# NVFP4-SPEC.md section 2, worked example (bytes produced by ModelOpt, written in the spec).
WORKED_BLOCK0 = [0.1, -0.25, 0.3, -0.5, 0.75, -1.0, 1.2, -1.5, 1.75, -2.0, 2.2, -2.5, 2.75, -0.05,
                 0.0, 3.0]
WORKED_BLOCK1 = [0.01, -0.02, 0.003, 0.04, -0.035, 0, 0.015, -0.0075, 0.02, 0.025, -0.03, 0.005,
                 -0.001, 0.0125, -0.04, 0.0333]
WORKED = Encoded(bytes.fromhex("90A1C3D4E6E68770D3710FA4651E486F"),
                 bytes.fromhex("7E4C"), np.uint32(0x3A924925).tobytes())


@pytest.mark.parametrize("form", ["cpu", "gpu"])
def test_spec_worked_example(fp4kit_encode, form):
    x = to_torch(np.array([WORKED_BLOCK0 + WORKED_BLOCK1]), "bf16")
    # amax 3.0 gives the same s2 bits in both forms (spec), so both must give the spec's bytes.
    assert_same(fp4kit_encode(x, "bf16", form), WORKED, 32, f"worked example, fp4kit {form}")
    assert_same(modelopt_encode(x), WORKED, 32, "worked example, ModelOpt")


def test_all_zero_tensor_deliberate_difference(fp4kit_encode):
    """ModelOpt turns an all-zero tensor into s2 = 0 and NaN scale bytes (0/0: 0x7F on the GPU per
    the spec, 0xFF on x86 CPUs, where 0/0 is a negative NaN); fp4kit deliberately
    uses amax = 1 instead (spec section 2). Its bytes must equal ModelOpt's with that s2 given."""
    x = torch.zeros(4, 32, dtype=torch.bfloat16)
    mo_default = modelopt_encode(x)
    assert np.frombuffer(mo_default.weight_scale_2, np.float32)[0] == 0.0
    assert set(mo_default.weight_scale) <= {0x7F, 0xFF}, "ModelOpt changed its all-zero behaviour"
    ours = fp4kit_encode(x, "bf16", "cpu")
    s2_for_amax_1 = np.float32(1.0) / np.float32(2688.0)
    assert_same(ours, modelopt_encode(x, s2_for_amax_1), 32, "all-zero tensor")
    assert set(ours.weight_scale) == {0x38} and set(ours.weight) == {0}


def test_dequantize_agrees_with_modelopt(nvfp4_tool, tmp_path):
    """fp4kit's nvfp4_dequantize (fp4kit-nvfp4 --dequantize) against NVFP4QTensor.dequantize on
    ModelOpt's own encodings. ModelOpt computes code * (scale * s2), fp4kit (code * scale) * s2, so
    non-zero values agree within 1 float32 ulp; zeros agree as numbers (ModelOpt maps code 0x8 to
    +0.0, fp4kit to -0.0)."""
    for seed in range(4):
        x = to_torch(wide_range(32, 256, seed) if seed == 3 else
                     gaussian(32, 256, seed, std=10.0 ** (seed - 2)), "bf16")
        q, sf, s2 = NVFP4QTensor.quantize(x.clone(), 16)
        theirs = q.dequantize(dtype=torch.float32, scale=sf, double_scale=s2, block_sizes={-1: 16})
        d = tmp_path / str(seed)
        d.mkdir()
        (d / "weight.bin").write_bytes(q._quantized_data.numpy().tobytes())
        (d / "weight_scale.bin").write_bytes(sf.view(torch.uint8).numpy().tobytes())
        (d / "weight_scale_2.bin").write_bytes(s2.float().reshape(()).numpy().tobytes())
        run_checked([nvfp4_tool, "--dequantize", d, "--rows", 32, "--cols", 256])
        ours = torch.from_numpy(np.fromfile(d / "dequant.bin", np.float32).reshape(32, 256))
        assert torch.equal(ours == 0, theirs == 0), f"seed {seed}: zeros differ"
        nz = ours != 0
        ulps = (ours[nz].view(torch.int32).long() - theirs[nz].view(torch.int32).long()).abs()
        assert ulps.max().item() <= 1, f"seed {seed}: {ulps.max().item()} ulp apart"
