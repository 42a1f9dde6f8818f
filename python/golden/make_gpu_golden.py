"""Golden NVFP4 encodings from ModelOpt running on an NVIDIA GPU (the "GPU form" of s2).

Published NVFP4 checkpoints are made by ModelOpt on a GPU, where s2 = amax * (1/2688) in float32
(NVFP4-SPEC.md section 2); on CPU ModelOpt divides instead. CI has no GPU, so this script is run once
on the GPU machine and its small output, python/golden/nvfp4_gpu_golden.safetensors, is committed;
python/tests/test_codec_gpu_golden.py then requires fp4kit's default (GPU form) encoding to match
it byte for byte.

    python3 python/golden/make_gpu_golden.py OUT.safetensors

Inputs are generated here from a fixed seed (numpy), stored in the golden file beside ModelOpt's
outputs, so the test needs no generator of its own. ModelOpt computes s2 itself from each tensor.
"""
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import modelopt
from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)


def cases(rng):
    """(name, float32 matrix, torch dtype) with the edge cases of spec section 2 planted."""
    out = []
    shapes = [(16, 64), (64, 128), (48, 256), (7, 32), (24, 512)]
    for i, (n, k) in enumerate(shapes):
        for scale in (1e-3, 1.0, 40.0):
            x = rng.standard_normal((n, k)).astype(np.float32) * np.float32(scale)
            if i % 2 == 0:  # heavy tails
                x *= np.exp(rng.standard_normal((n, k)).astype(np.float32))
            out.append((f"gauss_{n}x{k}_s{scale:g}", x))
    # Planted ties: values exactly on E2M1 rounding boundaries once divided by the block scale.
    n, k = 32, 128
    x = rng.standard_normal((n, k)).astype(np.float32)
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=np.float32)
    for r in range(n):
        for b in range(k // 16):
            blk = x[r, 16 * b:16 * b + 16]
            blk[:] = rng.choice(np.concatenate([mids, -mids, E2M1]), 16) * np.float32(2.0 ** (r % 7 - 3))
            blk[0] = np.float32(6.0 * 2.0 ** (r % 7 - 3))  # block max fixes the scale
    out.append(("ties", x))
    # Zero blocks, tiny blocks (scale clamped to 2^-9), subnormal block scales, an outlier row.
    x = rng.standard_normal((64, 256)).astype(np.float32)
    x[0, :] = 0
    x[1, 16:32] = 0
    x[2, :16] = 1e-9
    x[3, :16] *= 1e-4
    x[4, :16] *= 3e-3
    x[5, 5] = 900.0
    out.append(("edges", x))
    # Wide dynamic range across rows.
    x = rng.standard_normal((64, 128)).astype(np.float32)
    x *= (2.0 ** rng.integers(-20, 12, size=(64, 1))).astype(np.float32)
    out.append(("wide", x))
    # An all-zero tensor is deliberately not included: fp4kit differs from ModelOpt there (spec 2).
    return out


def main():
    path = sys.argv[1]
    assert torch.cuda.is_available(), "run this on the GPU machine"
    rng = np.random.default_rng(20261126)
    tensors = {}
    count = 0
    for name, x in cases(rng):
        for dt_name, dt in (("bf16", torch.bfloat16), ("f32", torch.float32)):
            t = torch.from_numpy(x).to(dt)
            q, sf, s2 = NVFP4QTensor.quantize(t.cuda(), 16)
            key = f"{name}.{dt_name}"
            tensors[f"{key}.input"] = t.contiguous()
            tensors[f"{key}.weight"] = q._quantized_data.cpu().contiguous()
            tensors[f"{key}.weight_scale"] = sf.cpu().contiguous().view(torch.uint8)
            tensors[f"{key}.weight_scale_2"] = s2.float().reshape(()).cpu()
            count += 1
    meta = {"producer": "python/golden/make_gpu_golden.py",
            "modelopt": modelopt.__version__, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0), "cases": str(count)}
    save_file(tensors, path, metadata=meta)
    print(f"{count} cases written to {path}: {meta}")


if __name__ == "__main__":
    main()
