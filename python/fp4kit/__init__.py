"""fp4kit: quantize Hugging Face checkpoints to NVIDIA NVFP4, from Python.

The work is done by fp4kit's C++ core (the extension ``fp4kit._core``), through the same job
functions the ``fp4kit`` command runs, so a call gives the bytes the command writes::

    import fp4kit
    report = fp4kit.quantize("Qwen3-30B-A3B", "out", weights_only=True, exclude=["*.mlp.gate"])
    print(report.summary)
    result = fp4kit.verify("out", source="Qwen3-30B-A3B")
    assert result.ok, result.errors

Errors are :class:`fp4kit.Error` carrying the message the command prints after ``fp4kit: error:``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from . import _blas

# Before the extension loads OpenBLAS: the kernels the fp4kit executable would run (_blas.py).
_blas.set_coretype()

from . import _core  # noqa: E402

__version__: str = _core.__version__

#: Bad input or a failed check: the message names the file, tensor and rule (as the CLI prints it).
Error = _core.Error
#: Wrong usage found by the core (the command exits 2): a subclass of :class:`Error`.
UsageError = _core.UsageError

#: ``progress(done, total, name)``, or an object with ``update(n)`` and a ``total`` attribute
#: (a ``tqdm`` bar): called once per tensor (quantize) or per layer (calibrate).
Progress = Union[Callable[[int, int, str], Any], Any]

__all__ = [
    "Error", "UsageError", "quantize", "verify", "inspect", "calibrate", "eval", "Checkpoint", "NVFP4Weight",
    "QuantizeReport", "VerifyResult", "Finding", "CalibrateResult", "decode_e2m1", "decode_e4m3",
]


def _path(p: Optional[Union[str, os.PathLike]]) -> str:
    return "" if p is None else os.fspath(p)


def _progress_fn(progress: Optional[Progress]) -> Optional[Callable[..., None]]:
    """A callable for the C++ side: progress itself, or a tqdm-like bar driven by it."""
    if progress is None:
        return None
    if hasattr(progress, "update") and not callable(progress):
        bar = progress

        def drive(done: int, total: int, name: Any = None, *_: Any) -> None:
            if getattr(bar, "total", None) != total:
                bar.total = total
                if hasattr(bar, "refresh"):
                    bar.refresh()
            bar.update(done - getattr(bar, "n", done - 1))
            if name is not None and hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(str(name), refresh=False)

        return drive
    if not callable(progress):
        raise TypeError("progress must be a callable(done, total, name) or a tqdm-like bar")
    return progress


def _per_tensor(fn: Optional[Callable[..., Any]]) -> Optional[Callable[..., None]]:
    """The core reports (done, total, tensor, bytes read); callers get (done, total, tensor)."""
    return None if fn is None else (lambda done, total, name, _bytes: fn(done, total, name))


@dataclass
class QuantizeReport:
    """What ``fp4kit quantize --report FILE`` writes, as an object (``raw`` is the document)."""

    output: str
    plan: dict
    tensors: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    verify: Optional[dict] = None
    warnings: list = field(default_factory=list)
    raw: dict = field(default_factory=dict)


def quantize(
    src: Union[str, os.PathLike],
    out: Optional[Union[str, os.PathLike]] = None,
    *,
    weights_only: bool = False,
    stats: Optional[Union[str, os.PathLike]] = None,
    format: str = "modelopt",
    exclude: Iterable[str] = (),
    include: Iterable[str] = (),
    rules: Sequence[tuple] = (),
    recipe: Optional[Union[str, os.PathLike]] = None,
    verify: str = "structural",
    scale_form: str = "gpu",
    max_shard_size: str = "5GB",
    force: bool = False,
    threads: int = 0,
    report: Optional[Union[str, os.PathLike]] = None,
    plan_json: Optional[Union[str, os.PathLike]] = None,
    dry_run: bool = False,
    input_scale_fallback: bool = False,
    quantize_linear_attn: bool = False,
    scales: str = "max",
    global_norm: int = 448,
    hessian_min_tokens: int = 1024,
    gptq: bool = False,
    gptq_damp: float = 0.01,
    allow_destroyed: bool = False,
    progress: Optional[Progress] = None,
) -> QuantizeReport:
    """``fp4kit quantize SRC OUT``: writes OUT atomically and returns the report.

    ``weights_only=True`` is W4A16 (NVFP4A16 in llm-compressor); otherwise ``stats`` (from
    :func:`calibrate`) gives the activation scales (W4A4). ``format`` is ``"modelopt"``,
    ``"compressed-tensors"`` or ``"gguf"`` (OUT is then one ``.gguf`` file). Module rules are globs over checkpoint module names, applied after
    the recipe's: first every ``include``, then every ``exclude`` (later wins, so an exclude
    beats an include), then ``rules`` given as ``("include"|"exclude", glob)`` in order, as
    ``--include``/``--exclude`` on the command line. ``dry_run=True`` plans only (the report
    holds just ``plan``). ``scales`` is the block-scale choice: ``"max"`` (ModelOpt's,
    byte-identical), ``"mse"`` or ``"hessian"`` (needs ``stats`` from ``calibrate(hessian=...)``);
    ``gptq=True`` needs ``calibrate(hessian=..., full_xtx=True)``.
    """
    for name, value, allowed in (("format", format, ("modelopt", "compressed-tensors", "gguf")),
                                 ("verify", verify, ("structural", "full", "none")),
                                 ("scale_form", scale_form, ("gpu", "cpu")),
                                 ("scales", scales, ("max", "mse", "hessian")),
                                 ("global_norm", global_norm, (448, 256))):
        if value not in allowed:  # the command line's usage errors (exit 2)
            raise ValueError(f"{name}: {value!r} not in {list(allowed)}")
    if isinstance(include, str) or isinstance(exclude, str):
        raise TypeError("include/exclude take a list of globs, not one string")
    ordered = [(True, g) for g in include] + [(False, g) for g in exclude]
    for kind, glob in rules:
        if kind not in ("include", "exclude"):
            raise ValueError(f"rules: kind must be 'include' or 'exclude', not {kind!r}")
        ordered.append((kind == "include", glob))
    doc, warnings = _core.quantize(
        src=_path(src), out=_path(out), format=format, weights_only=weights_only,
        stats=_path(stats), recipe=_path(recipe), rules=ordered, dry_run=dry_run,
        plan_json=_path(plan_json), threads=threads, report=_path(report), scale_form=scale_form,
        max_shard_size=max_shard_size, force=force, verify=verify,
        input_scale_fallback=input_scale_fallback, quantize_linear_attn=quantize_linear_attn,
        scales=scales, global_norm=global_norm, hessian_min_tokens=hessian_min_tokens,
        gptq=gptq, gptq_damp=gptq_damp, allow_destroyed=allow_destroyed,
        progress=_per_tensor(_progress_fn(progress)))
    raw = json.loads(doc) or {}  # {} when a GGUF is repacked from an NVFP4 source (no plan)
    return QuantizeReport(output=_path(out), plan=raw.get("plan", {}),
                          tensors=raw.get("tensors", []), summary=raw.get("summary", {}),
                          verify=raw.get("verify"), warnings=list(warnings), raw=raw)


@dataclass
class Finding:
    severity: str  # "error", "warning", "info"
    check: str
    module: str
    message: str


@dataclass
class VerifyResult:
    """What ``fp4kit verify --report FILE`` writes; ``ok`` is the command's exit status 0."""

    ok: bool
    findings: list
    raw: dict

    @property
    def errors(self) -> list:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list:
        return [f for f in self.findings if f.severity == "warning"]


def verify(
    path: Union[str, os.PathLike],
    source: Optional[Union[str, os.PathLike]] = None,
    *,
    max_rel_rmse: float = 0.0,
    threads: int = 0,
    report: Optional[Union[str, os.PathLike]] = None,
) -> VerifyResult:
    """``fp4kit verify PATH [--source SRC]``: structural checks, and with ``source`` numeric ones.

    A failed check is a finding (``ok`` False), not an exception; an unreadable input raises
    :class:`Error`.
    """
    raw = json.loads(_core.verify(dir=_path(path), source=_path(source), report=_path(report),
                                  threads=threads, max_rel_rmse=max_rel_rmse))
    findings = [Finding(f["severity"], f["check"], f["module"], f["message"])
                for f in raw.get("findings", [])]
    return VerifyResult(ok=bool(raw["ok"]), findings=findings, raw=raw)


def inspect(path: Union[str, os.PathLike]) -> dict:
    """``fp4kit inspect PATH --json``: tensors, model summary, quantization, encoded weights."""
    return json.loads(_core.inspect(_path(path)))


@dataclass
class CalibrateResult:
    output: str
    samples: int
    seq_len: int
    tokens: int
    linears: int  # linears with statistics
    idle_experts: list  # experts no calibration token was routed to
    seconds: float
    forward_seconds: float
    device: str  # what ran it, in words


def calibrate(
    src: Union[str, os.PathLike],
    data: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    samples: int = 128,
    seq_len: int = 512,
    text_field: str = "text",
    all_experts: bool = False,
    hessian: Optional[str] = None,
    full_xtx: bool = False,
    threads: int = 0,
    device: str = "auto",
    gpu_fp32: bool = False,
    chunk_tokens: int = 0,
    progress: Optional[Progress] = None,
) -> CalibrateResult:
    """``fp4kit calibrate SRC --data DATA -o OUT``: activation statistics for W4A4 ``quantize``.

    ``hessian`` (``"raw"`` or ``"w4a4"``) also collects what ``quantize(scales="hessian")``
    needs. ``chunk_tokens``: tokens per block of the linears (0: 2048 on the CPU, 16384 on a
    GPU). ``progress`` is called after each layer as ``progress(layers_done, layers)``.
    """
    r = json.loads(_core.calibrate(
        src=_path(src), data=_path(data), out=_path(out), samples=samples, seq_len=seq_len,
        text_field=text_field, all_experts=all_experts, hessian=hessian or "", full_xtx=full_xtx,
        threads=threads,
        device=device, gpu_fp32=gpu_fp32, chunk_tokens=chunk_tokens,
        progress=_progress_fn(progress)))
    return CalibrateResult(output=_path(out), **r)


def eval(
    quant: Union[str, os.PathLike],
    *,
    base: Optional[Union[str, os.PathLike]] = None,
    data: Optional[Union[str, os.PathLike]] = None,
    ctx: int = 512,
    chunks: int = 0,
    tokens: int = 0,
    base_logits: Optional[Union[str, os.PathLike]] = None,
    save_base: Optional[Union[str, os.PathLike]] = None,
    act_quant: bool = True,
    text_field: str = "text",
    threads: int = 0,
    device: str = "auto",
    gpu_fp32: bool = False,
) -> dict:
    """``fp4kit eval QUANT --json``: perplexity, and against ``base`` the KL divergence summary."""
    return json.loads(_core.eval(
        quant=_path(quant), base=_path(base), data=_path(data), base_logits=_path(base_logits),
        save_base=_path(save_base), text_field=text_field, ctx=ctx, chunks=chunks, tokens=tokens,
        no_act_quant=not act_quant, threads=threads, device=device, gpu_fp32=gpu_fp32))


# ---------------------------------------------------------------------------------------------
# Reading quantized checkpoints

_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)


def decode_e2m1(packed: np.ndarray) -> np.ndarray:
    """Unpacks NVFP4 codes: [..., K/2] uint8 (even element in the low nibble) -> [..., K] float32."""
    p = np.asarray(packed, dtype=np.uint8)
    codes = np.stack([p & 0x0F, p >> 4], axis=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)
    mag = _E2M1[codes & 0x7]
    return np.where(codes & 0x8, -mag, mag).astype(np.float32)


def decode_e4m3(codes: np.ndarray) -> np.ndarray:
    """E4M3FN bytes -> float32 (bias 7, subnormals, 0x7F/0xFF NaN, no infinities)."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int32)
    sign = np.where(c & 0x80, -1.0, 1.0)
    e = (c >> 3) & 0xF
    m = (c & 0x7).astype(np.float64)
    val = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * 2.0 ** (e - 7.0))
    val = np.where((c & 0x7F) == 0x7F, np.nan, val)
    return (sign * val).astype(np.float32)


@dataclass
class NVFP4Weight:
    """One NVFP4 linear of a checkpoint, as stored.

    ``codes`` [N, K/2] uint8 (two E2M1 codes per byte, even element in the low nibble),
    ``block_scales`` [N, K/16] uint8 (E4M3FN bits, one per 16 elements), ``global_scale`` the
    stored per-tensor float32: ModelOpt's ``weight_scale_2`` (multiplied) or compressed-tensors'
    ``weight_global_scale`` (its reciprocal, divided by). ``input_scale`` likewise as stored
    (``input_scale`` / ``input_global_scale``; None for weights-only checkpoints).
    """

    name: str
    format: str  # "modelopt" or "compressed-tensors"
    codes: np.ndarray
    block_scales: np.ndarray
    global_scale: float
    input_scale: Optional[float]

    @property
    def shape(self) -> tuple:
        return (self.codes.shape[0], self.codes.shape[1] * 2)

    def dequantize(self) -> np.ndarray:
        """The float32 weight in numpy, with the loaders' arithmetic: ModelOpt
        e2m1 * scale * weight_scale_2, compressed-tensors e2m1 * (scale / weight_global_scale)."""
        scale = decode_e4m3(self.block_scales)
        values = decode_e2m1(self.codes)
        g = np.float32(self.global_scale)
        if self.format == "compressed-tensors":
            return values * np.repeat(scale / g, 16, axis=1)
        return values * np.repeat(scale, 16, axis=1) * g


class Checkpoint:
    """A checkpoint's tensors as numpy arrays (read-only views of the files) and its NVFP4 linears."""

    def __init__(self, path: Union[str, os.PathLike]):
        self._c = _core.Checkpoint(_path(path))

    @property
    def path(self) -> str:
        return self._c.path

    @property
    def tensor_names(self) -> list:
        return list(self._c.tensor_names)

    def __contains__(self, name: str) -> bool:
        return name in set(self._c.tensor_names)

    def info(self, name: str) -> tuple:
        """(safetensors dtype, shape)."""
        dtype, shape = self._c.info(name)
        return dtype, tuple(shape)

    def tensor(self, name: str) -> np.ndarray:
        """Stored values; BF16 comes as float32, FP8 as its uint8 codes (see :func:`decode_e4m3`)."""
        a = self._c.tensor(name)
        if self._c.info(name)[0] == "BF16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a

    def _scalar(self, name: str) -> float:
        return float(np.asarray(self.tensor(name), dtype=np.float32).reshape(-1)[0])

    def nvfp4_weights(self) -> dict:
        """Every 2-D NVFP4 linear (ModelOpt or compressed-tensors layout), by module name."""
        names = set(self._c.tensor_names)
        out = {}
        for n in sorted(names):
            dtype, shape = self._c.info(n)
            if dtype != "U8" or len(shape) != 2:
                continue
            if n.endswith(".weight_packed"):
                m, fmt, gname, iname = n[:-14], "compressed-tensors", ".weight_global_scale", \
                    ".input_global_scale"
            elif n.endswith(".weight") and n[:-7] + ".weight_scale_2" in names:
                m, fmt, gname, iname = n[:-7], "modelopt", ".weight_scale_2", ".input_scale"
            else:
                continue
            out[m] = NVFP4Weight(
                name=m, format=fmt, codes=self._c.tensor(n),
                block_scales=self._c.tensor(m + ".weight_scale"),
                global_scale=self._scalar(m + gname),
                input_scale=self._scalar(m + iname) if m + iname in names else None)
        return out

    def dequantize(self, module: str) -> np.ndarray:
        """The float32 [N, K] weight of a linear, decoded by the C++ core as loaders decode it."""
        return self._c.dequantize(module)

