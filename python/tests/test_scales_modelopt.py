"""--scales mse against ModelOpt's own MSE weight calibration with the FP8 scale sweep.

ModelOpt's whole `mtq.quantize(..., NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG)` does not run on CPU
(its static_blockwise_fp4_fake_quant raises "requires triton"), so this drives the calibrator
class itself, modelopt.torch.quantization.calib.mse.NVFP4MSECalibrator: its 126 FP8 candidates,
its per-candidate squared-error losses (F.mse_loss summed per block) and its argmin, with
ModelOpt's CPU codec (NVFP4QTensor.quantize with the candidate's block scale) as quant_func.
fp4kit side: build/fp4kit-nvfp4 --scales mse --scale-form cpu (s2 = amax / 2688 as on CPU).

Same scale bytes except where two codes give the same loss to float rounding: ModelOpt's argmin
keeps the smallest code, fp4kit the one closest to the max-based code. Every differing block is
checked to be such a tie: both choices' losses, recomputed in float64 from the dequantized
blocks, agree to 1e-5 relative.
"""
import numpy as np
import torch

from conftest import require_executable, run_checked, tool_path
from modelopt.torch.quantization.calib.mse import NVFP4MSECalibrator
from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float64)


def dequantize(packed: np.ndarray, scales: np.ndarray, s2: float, rows: int, cols: int):
    codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(rows, cols)
    sf = torch.from_numpy(scales.copy()).view(torch.float8_e4m3fn).float().numpy().astype(np.float64)
    return E2M1[codes] * np.repeat(sf.reshape(rows, cols // 16), 16, axis=1) * s2


def modelopt_mse_scales(w: torch.Tensor) -> np.ndarray:
    blocks = w.reshape(-1, 16)
    global_amax = w.abs().max()
    s2 = global_amax / (6 * 448)

    def quant_func(x, amax):
        sf = (amax.reshape(-1) / 6 / s2).clamp(2**-9, 448).to(torch.float8_e4m3fn)
        q, _, _ = NVFP4QTensor.quantize(x.clone(), 16, weights_scaling_factor=sf.reshape(-1, 1),
                                        weights_scaling_factor_2=s2)
        packed = q._quantized_data.numpy()
        deq = dequantize(packed, sf.view(torch.uint8).numpy(), float(s2), x.shape[0], 16)
        return torch.from_numpy(deq).float()

    cal = NVFP4MSECalibrator(amax=blocks.abs().amax(dim=1), global_amax=global_amax, axis=0,
                             quant_func=quant_func)
    cal.collect(blocks)
    best = cal.compute_amax()
    return (best / 6 / s2).clamp(2**-9, 448).to(torch.float8_e4m3fn).view(torch.uint8).numpy()


def test_mse_scales_match_modelopts_fp8_sweep(tmp_path):
    tool = require_executable(tool_path("nvfp4"))
    rng = np.random.default_rng(5)
    rows, cols = 48, 128
    w = (rng.standard_normal((rows, cols)) * rng.uniform(0.1, 2, (rows, 1))
         * np.where(rng.random((rows, cols)) < 0.02, 8, 1)).astype(np.float32)
    wt = torch.from_numpy(w)
    want = modelopt_mse_scales(wt)
    (tmp_path / "w.bin").write_bytes(w.tobytes())
    run_checked([tool, "--in", tmp_path / "w.bin", "--rows", rows, "--cols", cols, "--dtype", "f32",
                 "--out", tmp_path / "o", "--scale-form", "cpu", "--scales", "mse"])
    got = np.frombuffer((tmp_path / "o" / "weight_scale.bin").read_bytes(), np.uint8)
    packed = np.frombuffer((tmp_path / "o" / "weight.bin").read_bytes(), np.uint8)
    s2 = float(np.frombuffer((tmp_path / "o" / "weight_scale_2.bin").read_bytes(), np.float32)[0])
    assert s2 == np.float32(np.abs(w).max()) / np.float32(2688)
    # The max-based code differs from both on many blocks: the comparison is not vacuous.
    max_based = (torch.from_numpy(np.abs(w).reshape(-1, 16).max(1)) / 6 / s2).clamp(2**-9, 448)
    max_based = max_based.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert (want != max_based).mean() > 0.2
    differ = np.flatnonzero(got != want)
    assert len(differ) <= len(want) // 20, f"{len(differ)} of {len(want)} blocks differ"
    fp4 = dequantize(packed, got, s2, rows, cols).reshape(-1, 16)
    blocks = w.astype(np.float64).reshape(-1, 16)
    for b in differ:
        theirs = np.frombuffer(bytes([want[b]]), np.uint8)
        sf = torch.from_numpy(theirs.copy()).view(torch.float8_e4m3fn).float().item()
        tq, _, _ = NVFP4QTensor.quantize(torch.from_numpy(w.reshape(-1, 16)[b:b + 1].copy()), 16,
                                         weights_scaling_factor=torch.tensor([[sf]]).to(torch.float8_e4m3fn),
                                         weights_scaling_factor_2=torch.tensor(s2))
        their_deq = dequantize(tq._quantized_data.numpy(), theirs, s2, 1, 16)[0]
        mine = ((blocks[b] - fp4[b]) ** 2).sum()
        other = ((blocks[b] - their_deq) ** 2).sum()
        assert abs(mine - other) <= 1e-5 * max(mine, other), (b, got[b], want[b], mine, other)
