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

--scales hessian against ModelOpt's local-Hessian method (model_calib.local_hessian_calibrate,
which also needs Triton for its whole-model path on CPU): its own pieces, driven the way it drives
them. Its _LocalHessianAccumulator is fed every linear's input, captured by a forward pre-hook as
its _register_local_hessian_input_hooks does, from transformers' forward of the tiny Llama on
the calibration windows; its normalized per-block X^T X must match `fp4kit calibrate --hessian
raw`'s blocks / tokens (float32 forward on both sides: 1e-4 relative); then its
NVFP4MSECalibrator, with the accumulator's local_hessian_error as metric, sweeps the 126 FP8
codes per block of the original weights, with the global scale fp4kit wrote (q/k/v and gate/up
share it there as in ModelOpt's tied global amax). Scale bytes must be equal except at near-ties:
the two Hessians differ by float rounding and ModelOpt's einsum sums in another order, so a block
may flip between two codes whose dw^T H dw agree to 1e-4 relative (checked in float64 with
ModelOpt's H, for every differing block; at most 5 % of the blocks). The w4a4 Hessian (inputs
after this linear's own NVFP4 activation quantization, as the kernels see them) is deliberately
not ModelOpt's: its hook takes the input before the linear's input quantizer, so only `raw` is
compared.
"""
import numpy as np
import torch

from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch

import tiny_models
from conftest import fp4kit_bin, require_executable, run_checked, tool_path
from modelopt.torch.quantization.calib.mse import NVFP4MSECalibrator
from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float64)


def dequantize(packed: np.ndarray, scales: np.ndarray, s2: float, rows: int, cols: int):
    codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(rows, cols)
    sf = torch.from_numpy(scales.copy()).view(torch.float8_e4m3fn).float().numpy().astype(np.float64)
    return E2M1[codes] * np.repeat(sf.reshape(rows, cols // 16), 16, axis=1) * s2


def modelopt_mse_scales(w: torch.Tensor, s2=None, error_func=None) -> np.ndarray:
    """ModelOpt's FP8 scale sweep of w [rows, cols] (per-tensor s2 = amax / 2688 unless given),
    with its default squared error or `error_func` as the metric."""
    blocks = w.reshape(-1, 16)
    global_amax = w.abs().max()
    if s2 is None:
        s2 = global_amax / (6 * 448)
    else:
        s2 = torch.tensor(s2, dtype=torch.float32)
        global_amax = s2 * (6 * 448)

    def quant_func(x, amax):
        sf = (amax.reshape(-1) / 6 / s2).clamp(2**-9, 448).to(torch.float8_e4m3fn)
        q, _, _ = NVFP4QTensor.quantize(x.clone(), 16, weights_scaling_factor=sf.reshape(-1, 1),
                                        weights_scaling_factor_2=s2)
        packed = q._quantized_data.numpy()
        deq = dequantize(packed, sf.view(torch.uint8).numpy(), float(s2), x.shape[0], 16)
        return torch.from_numpy(deq).float()

    cal = NVFP4MSECalibrator(amax=blocks.abs().amax(dim=1), global_amax=global_amax, axis=0,
                             quant_func=quant_func, error_func=error_func)
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


def test_hessian_scales_match_modelopts_local_hessian(tmp_path):
    from modelopt.torch.quantization.model_calib import _LocalHessianAccumulator
    from transformers import AutoModelForCausalLM

    from test_quantize_modelopt import CALIB_IDS

    fp4kit = require_executable(fp4kit_bin())
    src = tiny_models.save("llama", tmp_path / "src")
    ids = tmp_path / "ids.u32"
    CALIB_IDS.numpy().astype("<u4").tofile(ids)
    stats = tmp_path / "stats.safetensors"
    run_checked([fp4kit, "calibrate", src, "--data", ids, "--samples", 4, "--seq-len", 32,
                 "--hessian", "raw", "-o", stats])
    run_checked([fp4kit, "quantize", src, tmp_path / "out", "--stats", stats, "--scales", "hessian",
                 "--hessian-min-tokens", 0, "--verify", "none"])
    ours_stats = load_file(stats)
    out = {}
    for f in sorted((tmp_path / "out").glob("*.safetensors")):
        out.update(load_torch(f))

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    linears = {n: m for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and f"{n}.weight_scale" in out}
    assert len(linears) == 14, sorted(linears)  # 2 layers x (q, k, v, o, gate, up, down)
    acc = {n: _LocalHessianAccumulator(m.out_features, m.in_features, 16) for n, m in linears.items()}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: acc[n].accumulate(args[0]))
             for n, m in linears.items()]
    with torch.no_grad():
        model(CALIB_IDS)
    for h in hooks:
        h.remove()

    for name in linears:
        tokens = int(ours_stats[f"{name}.token_count"].reshape(-1)[0])
        assert tokens == acc[name].num_samples == CALIB_IDS.numel()
        theirs_h = acc[name].normalized_hessian()
        ours_h = torch.from_numpy(ours_stats[f"{name}.input_hessian_blocks"].reshape(theirs_h.shape)
                                  / tokens).float()
        scale = theirs_h.abs().amax()
        assert torch.allclose(ours_h, theirs_h, rtol=1e-4, atol=1e-5 * float(scale)), name

    # ModelOpt's Python sweep costs seconds per linear on CPU: q_proj (global scale shared with
    # k and v, input after the norm) and down_proj (input = the MLP activation, K = 128).
    blocks_total = blocks_differ = moved = 0
    for name in ("model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        lin, theirs_h = linears[name], acc[name].normalized_hessian()
        w = lin.weight.detach()
        rows, cols = w.shape
        s2 = float(out[f"{name}.weight_scale_2"].reshape(-1)[0])
        want = modelopt_mse_scales(w, s2, acc[name].build_error_func(keep_buffer=True))
        got = out[f"{name}.weight_scale"].view(torch.uint8).numpy().reshape(-1)
        base = (w.abs().reshape(-1, 16).amax(1) / 6 / s2).clamp(2**-9, 448)
        moved += int((want != base.to(torch.float8_e4m3fn).view(torch.uint8).numpy()).sum())
        blocks_total += want.size
        h64 = theirs_h.double().numpy()
        wb = w.double().numpy().reshape(rows, cols // 16, 16)
        for b in np.flatnonzero(got != want):
            blocks_differ += 1
            r, j = divmod(int(b), cols // 16)
            losses = []
            for code in (got[b], want[b]):
                sf = float(torch.tensor([code], dtype=torch.uint8).view(torch.float8_e4m3fn).float())
                q, _, _ = NVFP4QTensor.quantize(w[r:r + 1, 16 * j:16 * j + 16].clone(), 16,
                                                weights_scaling_factor=torch.tensor([[sf]]).to(torch.float8_e4m3fn),
                                                weights_scaling_factor_2=torch.tensor(s2))
                deq = dequantize(q._quantized_data.numpy(), np.array([code], np.uint8), s2, 1, 16)[0]
                dw = wb[r, j] - deq
                losses.append(dw @ h64[j] @ dw)
            assert abs(losses[0] - losses[1]) <= 1e-4 * max(losses), (name, r, j, got[b], want[b], losses)
    print(f"local-Hessian: {blocks_differ} of {blocks_total} blocks differ, {moved} moved from max")
    assert moved > blocks_total // 5, "the Hessian search moved too few scales to compare"
    assert blocks_differ <= blocks_total // 20, f"{blocks_differ} of {blocks_total} blocks differ"
