"""Quantize conformance: `fp4kit quantize` against ModelOpt's NVFP4 PTQ + unified HF export, and
fp4kit's compressed-tensors output against the compressed-tensors library, all on CPU.

For each tiny random model of tiny_models.py (llama, mixtral, qwen3_moe, qwen3_5_moe, deepseek_v3,
gpt_oss, llama4, llama4_vl):
  ModelOpt: from_pretrained (bf16) -> mtq.quantize(NVFP4_DEFAULT_CFG or W4A16_NVFP4_CFG, one small
            calibration forward) -> export_hf_checkpoint. On CPU ModelOpt computes s2 = amax / 2688.
  fp4kit:   fp4kit quantize SRC OUT --scale-form cpu [--weights-only | --stats FILE].
            For W4A4 the stats file holds ModelOpt's own calibrated input amax per linear (read from
            its input quantizers before export, fused experts' per-layer value given to every
            expert), so fp4kit's grouping rules (q/k/v, gate/up, one value per MoE layer and
            projection kind) must reproduce ModelOpt's input_scale bytes.
Required: identical weight, weight_scale, weight_scale_2 (and input_scale) bytes for every quantized
tensor, identical unquantized tensors, the same quantized and excluded module sets, and matching
quantization configs, except for the DELIBERATE differences listed below.

BMM experts (gpt-oss, Llama-4; NVFP4-SPEC section 4): ModelOpt keeps `<m>` = `...experts.gate_up_proj`
/ `...experts.down_proj` 3-D and names its tensors `<m>`, `<m>_weight_scale`, `<m>_weight_scale_2`,
`<m>_input_scale` (one s2 and one input_scale for all experts). Its calibrated amax comes from the
experts module's `gate_up_proj_input_quantizer` / `down_proj_input_quantizer`; fp4kit's stats key
for it is `<m>.input_amax` (its plan entry is named `<m>`). These names are compared byte for byte
like any other quantized module.
"""
import copy
import fnmatch
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tiny_models
from conftest import fp4kit_bin, require_executable, run_checked, tool_path

FAMILIES = list(tiny_models.FAMILIES)
MODES = ["w4a4", "w4a16"]
CALIB_IDS = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1234))

# Deliberate differences between fp4kit's defaults and ModelOpt's (each with its reason).
DELIBERATE = {
    # Spec section 7: vLLM mis-loads a scalar scale into the fused in_proj of Qwen3.5/3.6 linear
    # attention, and SGLang and llm-compressor skip it, so fp4kit keeps linear_attn.* in BF16 unless
    # --quantize-linear-attn is given. ModelOpt quantizes in_proj_qkv, in_proj_z and out_proj
    # (Qwen3-Next: in_proj_qkvz and out_proj).
    "linear_attn_kept": re.compile(r".*\.linear_attn\.(in_proj_qkvz?|in_proj_z|out_proj)$"),
}
# Unquantized tensors whose dtype ModelOpt changes: it writes DeepSeek's e_score_correction_bias as
# F32 (spec section 5); fp4kit keeps the source dtype. Values must still be equal.
DTYPE_MAY_DIFFER = re.compile(r".*\.e_score_correction_bias$")


def read_tensors(d: Path) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            for k in h.keys():
                out[k] = h.get_tensor(k)
    return out


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


# A quantized BMM expert tensor of a checkpoint (gpt-oss, Llama-4): 3-D, its scales are named
# `<m>_weight_scale` etc. Per-expert linears are `...experts.<e>.<proj>`, never this.
BMM_MODULE = re.compile(r".*\.experts\.(gate_up_proj|down_proj)$")
QUANT_SUFFIXES = ("weight", "weight_scale", "weight_scale_2", "input_scale")


def qname(m: str, suffix: str) -> str:
    """Checkpoint name of a quantized module's tensor: `<m>.weight_scale` for a linear,
    `<m>_weight_scale` (and `<m>` itself for the weight) for a BMM expert tensor."""
    if BMM_MODULE.match(m):
        return m if suffix == "weight" else f"{m}_{suffix}"
    return f"{m}.{suffix}"


def quantized_modules(tensors: dict) -> set:
    linears = {k[: -len(".weight_scale")] for k in tensors if k.endswith(".weight_scale")}
    bmm = {k[: -len("_weight_scale")] for k in tensors
           if k.endswith("_weight_scale") and BMM_MODULE.match(k[: -len("_weight_scale")])}
    return linears | bmm


def quantized_tensor_names(modules: set) -> set:
    return {qname(m, s) for m in modules for s in QUANT_SUFFIXES}


def modelopt_checkpoint_name(name: str, family: str) -> str:
    """In-memory module name (transformers 5) -> checkpoint name (spec section 4)."""
    if family == "mixtral":
        name = name.replace(".mlp.", ".block_sparse_moe.")
        for mem, disk in (("gate_proj", "w1"), ("up_proj", "w3"), ("down_proj", "w2")):
            name = re.sub(rf"(\.experts\.\d+)\.{mem}$", rf"\1.{disk}", name)
    return name


def bmm_expert_classes() -> tuple:
    """transformers' expert modules that ModelOpt exports 3-D (its own registration list)."""
    import transformers
    return tuple(c for c in (getattr(transformers.models.gpt_oss.modeling_gpt_oss, "GptOssExperts",
                                     None),
                             getattr(transformers.models.llama4.modeling_llama4,
                                     "Llama4TextExperts", None)) if c is not None)


def modelopt_input_amax(model, family: str) -> dict:
    """Calibrated input amax of every enabled input quantizer, under checkpoint module names
    (for a BMM experts module: `<experts>.gate_up_proj` / `<experts>.down_proj`, fp4kit's name of
    the 3-D tensor)."""
    out = {}
    bmm_classes = bmm_expert_classes()
    for name, mod in model.named_modules():
        q = getattr(mod, "input_quantizer", None)
        if q is not None and q.is_enabled and getattr(q, "amax", None) is not None:
            out[modelopt_checkpoint_name(name, family)] = float(q.amax.float().max())
        for proj, members in (("gate_up_proj", ("gate_proj", "up_proj")), ("down_proj", ("down_proj",))):
            q = getattr(mod, f"{proj}_input_quantizer", None)
            if q is None or not q.is_enabled or getattr(q, "amax", None) is None:
                continue
            if isinstance(mod, bmm_classes):
                out[f"{name}.{proj}"] = float(q.amax.float().max())
                continue
            for e in range(getattr(mod, proj).shape[0]):
                for m in members:
                    out[modelopt_checkpoint_name(f"{name}.{e}.{m}", family)] = float(q.amax.float().max())
    return out


def write_stats(path: Path, amax: dict):
    save_file({f"{m}.input_amax": torch.tensor(v, dtype=torch.float32) for m, v in amax.items()},
              path, metadata={"format": "fp4kit-stats", "version": "1", "source": "ModelOpt calib",
                              "data": "random ids", "compute": "bfloat16"})


@dataclass
class Run:
    family: str
    mode: str
    src: Path
    modelopt: Path
    fp4kit_runs: dict = field(default_factory=dict)  # label -> output dir
    stats: Path | None = None
    parity_args: list = field(default_factory=list)  # fp4kit options that match ModelOpt's run
    input_amax: dict = field(default_factory=dict)  # ModelOpt's calibrated input amax (W4A4)

    def zero_input(self) -> set:
        return {m for m, a in self.input_amax.items() if a == 0.0}


_RUNS: dict = {}


def fp4kit_quantize(src: Path, out: Path, extra: list) -> Path:
    cmd = [fp4kit_bin(), "quantize", src, out, "--scale-form", "cpu", *extra]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0 and "not implemented" in proc.stderr:
        pytest.skip(f"fp4kit quantize is not implemented yet: {proc.stderr.strip()}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stderr}")
    return out


def get_run(family: str, mode: str, root: Path, src: Path | None = None) -> Run:
    """Runs ModelOpt and fp4kit once per (model, mode) and session, on a tiny model of `family`
    built here, or on the checkpoint `src` (a model of that family)."""
    key = (family, mode, src)
    if key in _RUNS:
        return _RUNS[key]
    require_executable(fp4kit_bin())
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    work = root / f"{src.name if src else family}-{mode}"
    if src is None:
        src = work / "src"
        tiny_models.save(family, src)
    work.mkdir(parents=True, exist_ok=True)
    auto = AutoModelForImageTextToText if family.endswith("_vl") else AutoModelForCausalLM
    model = auto.from_pretrained(src, dtype=torch.bfloat16).eval()
    cfg = copy.deepcopy(mtq.NVFP4_DEFAULT_CFG if mode == "w4a4" else mtq.W4A16_NVFP4_CFG)
    # DELIBERATE: ModelOpt aborts the whole export on a linear with K % 16 != 0 ("Weight shape is
    # not divisible for block size"); the user must exclude it. fp4kit keeps it and reports it
    # (spec section 7). So such modules are disabled in ModelOpt's config, as a user would.
    for m in sorted(k_not_multiple_of_16(src)):
        cfg["quant_cfg"].append({"quantizer_name": f"{m}.*", "enable": False})
    with torch.no_grad():
        model = mtq.quantize(model, cfg, lambda m: m(CALIB_IDS))
    run = Run(family, mode, src, work / "modelopt")
    extra = []
    if mode == "w4a4":
        run.stats = work / "stats.safetensors"
        run.input_amax = modelopt_input_amax(model, family)
        write_stats(run.stats, run.input_amax)
        extra = ["--stats", run.stats]
    else:
        extra = ["--weights-only"]
    with torch.no_grad():
        export_hf_checkpoint(model, export_dir=run.modelopt)
    del model
    linear_attn = family.startswith(("qwen3_5_moe", "qwen3_next"))
    # ModelOpt writes tensors its shared scales destroy (stories260k-qwen3moe's 2^-24 q/k);
    # fp4kit refuses them by default, so parity runs commit them too.
    run.parity_args = (extra + ["--allow-destroyed"] +
                       (["--quantize-linear-attn"] if linear_attn else []))
    run.fp4kit_runs["parity"] = fp4kit_quantize(src, work / "fp4kit-parity", run.parity_args)
    run.fp4kit_runs["default"] = (fp4kit_quantize(src, work / "fp4kit-default", extra)
                                  if linear_attn else run.fp4kit_runs["parity"])
    _RUNS[key] = run
    return run


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("quantize-conformance")


def k_not_multiple_of_16(src: Path) -> set:
    return {k[: -len(".weight")] for k, t in read_tensors(src).items()
            if k.endswith(".weight") and t.dim() == 2 and t.shape[-1] % 16}


S2_OF_AMAX_1_CPU = np.float32(1.0) / np.float32(2688.0)


def check_all_zero_deliberate(ours: dict, theirs: dict, m: str, what: str) -> bool:
    """DELIBERATE (spec section 2): for an all-zero weight (e.g. Qwen2-MoE padding shared experts)
    ModelOpt writes s2 = 0 and NaN scale bytes; fp4kit uses amax = 1: s2 = 1/2688 (CPU form), scale
    bytes 0x38, codes 0. Returns True when this case applied (and was checked)."""
    if theirs[qname(m, "weight_scale_2")].item() != 0.0:
        return False
    assert ours[qname(m, "weight_scale_2")].numpy() == S2_OF_AMAX_1_CPU, f"{what}: {m} all-zero s2"
    assert set(raw(ours[qname(m, "weight_scale")])) == {0x38}, f"{what}: {m} all-zero scales"
    assert set(raw(ours[qname(m, "weight")])) == {0}, f"{what}: {m} all-zero codes"
    assert set(raw(theirs[qname(m, "weight_scale")])) <= {0x7F, 0xFF}, "ModelOpt changed"
    return True


def check_zero_input_deliberate(ours: dict, theirs: dict, m: str):
    """DELIBERATE: a linear whose calibrated input amax is 0 (its input is all zeros, e.g. the
    down_proj of an all-zero shared expert): ModelOpt's quantizer exports amax = maxbound = 6,
    input_scale 6/2688; fp4kit treats amax 0 as 1 (spec section 2), input_scale 1/2688. Either
    scale gives exact zeros."""
    assert theirs[qname(m, "input_scale")].numpy() == np.float32(6.0) / np.float32(2688.0), (
        "ModelOpt changed")
    assert ours[qname(m, "input_scale")].numpy() == S2_OF_AMAX_1_CPU, f"{m}: zero-input input_scale"


def check_same_quantized_tensors(ours: dict, theirs: dict, modules: set, what: str,
                                 zero_input: set = frozenset()):
    for m in sorted(modules):
        if m in zero_input:
            check_zero_input_deliberate(ours, theirs, m)
        suffixes = ["weight", "weight_scale", "weight_scale_2"]
        if m not in zero_input:
            suffixes.append("input_scale")
        if check_all_zero_deliberate(ours, theirs, m, what):
            suffixes = ["input_scale"] if m not in zero_input else []
        for suffix in suffixes:
            name = qname(m, suffix)
            assert (name in ours) == (name in theirs), f"{what}: {name} present in only one"
            if name not in theirs:
                continue
            a, b = ours[name], theirs[name]
            assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), (
                f"{what}: {name} is {a.dtype}{list(a.shape)} in fp4kit, {b.dtype}{list(b.shape)} in ModelOpt")
            if raw(a) != raw(b):
                x = np.frombuffer(raw(a), np.uint8)
                y = np.frombuffer(raw(b), np.uint8)
                bad = np.flatnonzero(x != y)
                detail = (f"fp4kit {a.item()!r} vs ModelOpt {b.item()!r}" if a.dim() == 0 else
                          f"{bad.size} of {x.size} bytes differ, first at byte {bad[0]}")
                pytest.fail(f"{what}: {name}: {detail}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_tensors_identical_to_modelopt(runs_root, family, mode):
    run = get_run(family, mode, runs_root)
    ours, theirs = read_tensors(run.fp4kit_runs["parity"]), read_tensors(run.modelopt)
    q_ours, q_theirs = quantized_modules(ours), quantized_modules(theirs)
    assert q_theirs, "ModelOpt quantized nothing: the reference run is broken"
    assert q_ours == q_theirs, (f"only fp4kit: {sorted(q_ours - q_theirs)}; "
                                f"only ModelOpt: {sorted(q_theirs - q_ours)}")
    check_same_quantized_tensors(ours, theirs, q_theirs, f"{family} {mode}", run.zero_input())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_unquantized_tensors_identical_to_modelopt(runs_root, family, mode):
    run = get_run(family, mode, runs_root)
    ours, theirs = read_tensors(run.fp4kit_runs["parity"]), read_tensors(run.modelopt)
    assert sorted(ours) == sorted(theirs), (f"only fp4kit: {sorted(set(ours) - set(theirs))}; "
                                            f"only ModelOpt: {sorted(set(theirs) - set(ours))}")
    quantized = quantized_tensor_names(quantized_modules(theirs))
    for name in sorted(theirs):
        if name in quantized:
            continue
        a, b = ours[name], theirs[name]
        assert tuple(a.shape) == tuple(b.shape), name
        if DTYPE_MAY_DIFFER.match(name):
            assert torch.equal(a.float(), b.float()), f"{name}: values differ"
        else:
            assert a.dtype == b.dtype and raw(a) == raw(b), f"{name}: differs from ModelOpt's"


def excluded_modules(ckpt_dir: Path, candidates: set) -> set:
    patterns = json.loads((ckpt_dir / "hf_quant_config.json").read_text())["quantization"][
        "exclude_modules"]
    return {m for m in candidates if any(fnmatch.fnmatchcase(m, p) for p in patterns)}


def weight_modules(src: Path) -> set:
    """Modules with a weight of 2 or more dimensions in the source: the ones a quantizer decides
    about (linears, embeddings, routers, conv1d), and the 3-D BMM expert tensors (gpt-oss,
    Llama-4), which are modules of their own in the output."""
    tensors = read_tensors(src)
    return ({k[: -len(".weight")] for k, t in tensors.items()
             if k.endswith(".weight") and t.dim() >= 2}
            | {k for k, t in tensors.items() if BMM_MODULE.match(k) and t.dim() == 3})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_same_excluded_modules_and_config(runs_root, family, mode):
    run = get_run(family, mode, runs_root)
    ours_dir = run.fp4kit_runs["parity"]
    candidates = weight_modules(run.src)
    quantized = quantized_modules(read_tensors(run.modelopt))
    ex_ours, ex_theirs = excluded_modules(ours_dir, candidates), excluded_modules(run.modelopt, candidates)
    assert ex_ours == ex_theirs, (f"excluded only by fp4kit: {sorted(ex_ours - ex_theirs)}; "
                                  f"only by ModelOpt: {sorted(ex_theirs - ex_ours)}")
    # Every module with a weight is either quantized or listed as excluded, never both.
    assert not (ex_ours & quantized_modules(read_tensors(ours_dir)))
    assert candidates == quantized | ex_theirs, sorted(candidates - quantized - ex_theirs)

    hq_ours = json.loads((ours_dir / "hf_quant_config.json").read_text())["quantization"]
    hq_theirs = json.loads((run.modelopt / "hf_quant_config.json").read_text())["quantization"]
    for key in ("quant_algo", "kv_cache_quant_algo", "group_size"):
        assert hq_ours[key] == hq_theirs[key], key
    qc_ours = json.loads((ours_dir / "config.json").read_text())["quantization_config"]
    qc_theirs = json.loads((run.modelopt / "config.json").read_text())["quantization_config"]
    for key in ("quant_method", "quant_algo", "config_groups"):
        assert qc_ours[key] == qc_theirs[key], f"config.json quantization_config[{key}]"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", ["qwen3_5_moe", "qwen3_5_moe_vl"])
def test_qwen3_5_linear_attention_kept_by_default(runs_root, family, mode):
    """The deliberate difference: without --quantize-linear-attn fp4kit keeps exactly ModelOpt's
    quantized linear_attn projections in BF16 (listed as excluded) and matches everything else."""
    run = get_run(family, mode, runs_root)
    ours, theirs = read_tensors(run.fp4kit_runs["default"]), read_tensors(run.modelopt)
    q_ours, q_theirs = quantized_modules(ours), quantized_modules(theirs)
    kept = {m for m in q_theirs if DELIBERATE["linear_attn_kept"].match(m)}
    assert kept, "the tiny Qwen3.5 model has no linear-attention layer"
    assert q_ours == q_theirs - kept
    src = read_tensors(run.src)
    for m in kept:
        assert torch.equal(ours[f"{m}.weight"], src[f"{m}.weight"]), m
    assert kept <= excluded_modules(run.fp4kit_runs["default"], kept)
    check_same_quantized_tensors(ours, theirs, q_ours, f"{family} {mode} default",
                                 run.zero_input())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", ["llama4", "llama4_vl"])
def test_llama4_routed_shared_dense_and_router_as_modelopt(runs_root, family, mode):
    """Llama-4 specifics the generic comparisons rely on, so they are not vacuous: the MoE layer's
    BMM experts (3-D, one s2), its shared expert and the dense layer's MLP are quantized by both,
    the router is kept in BF16 and listed as excluded by both."""
    run = get_run(family, mode, runs_root)
    prefix = "language_model.model" if family.endswith("_vl") else "model"
    ours, theirs = read_tensors(run.fp4kit_runs["parity"]), read_tensors(run.modelopt)
    moe, dense = f"{prefix}.layers.1.feed_forward", f"{prefix}.layers.0.feed_forward"
    expected = ({f"{moe}.experts.gate_up_proj", f"{moe}.experts.down_proj"}
                | {f"{moe}.shared_expert.{p}" for p in ("gate_proj", "up_proj", "down_proj")}
                | {f"{dense}.{p}" for p in ("gate_proj", "up_proj", "down_proj")})
    for what, tensors in (("ModelOpt", theirs), ("fp4kit", ours)):
        q = quantized_modules(tensors)
        assert expected <= q, f"{what} did not quantize {sorted(expected - q)}"
        assert f"{moe}.router" not in q
        assert tensors[f"{moe}.experts.gate_up_proj"].shape == (4, 32, 96), what  # [E, H/2, 2I]
        assert tensors[f"{moe}.experts.gate_up_proj_weight_scale_2"].dim() == 0, what
    src = read_tensors(run.src)
    assert raw(ours[f"{moe}.router.weight"]) == raw(src[f"{moe}.router.weight"])
    for d in (run.modelopt, run.fp4kit_runs["parity"]):
        assert f"{moe}.router" in excluded_modules(d, {f"{moe}.router"}), d.name


@pytest.mark.parametrize("family", ["llama4", "llama4_vl"])
def test_llama4_routed_experts_input_scale_is_their_own(runs_root, family):
    """Llama-4 multiplies the routed tokens by their sigmoid router score BEFORE the experts
    (transformers' Llama4TextMoe; vLLM's Llama4MoE: apply_router_weight_on_input=True), so the
    routed experts' gate_up does not read what the shared expert reads. ModelOpt calibrates them
    apart; the routed experts' input_scale must come from their own amax (a shared one from the
    shared expert's larger amax would waste FP4 range on every routed token)."""
    run = get_run(family, "w4a4", runs_root)
    prefix = "language_model.model" if family.endswith("_vl") else "model"
    moe = f"{prefix}.layers.1.feed_forward"
    routed, shared = run.input_amax[f"{moe}.experts.gate_up_proj"], run.input_amax[
        f"{moe}.shared_expert.gate_proj"]
    assert routed < shared, "ModelOpt's calibration no longer separates them: test is vacuous"
    ours = read_tensors(run.fp4kit_runs["parity"])
    cpu = np.float32(2688.0)
    assert ours[f"{moe}.shared_expert.gate_proj.input_scale"].numpy() == np.float32(shared) / cpu
    got = ours[f"{moe}.experts.gate_up_proj_input_scale"].numpy()
    assert got == np.float32(routed) / cpu, (
        f"routed experts' input_scale {got} = amax {got * cpu} (the shared expert's amax is "
        f"{shared}, the routed experts' {routed})")


@pytest.fixture(scope="session")
def gpt_oss_with_zero_experts(runs_root):
    """The tiny gpt-oss with whole experts zeroed inside the BMM tensors (as padded or dead experts
    are): expert 2 of layer 0's gate_up_proj, expert 1 of layer 1's down_proj."""
    src = runs_root / "gpt_oss_zero_experts"
    tiny_models.save("gpt_oss", src)
    tensors = read_tensors(src)
    tensors["model.layers.0.mlp.experts.gate_up_proj"][2] = 0
    tensors["model.layers.1.mlp.experts.down_proj"][1] = 0
    for f in src.glob("*.safetensors"):
        f.unlink()
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    return src


@pytest.mark.parametrize("mode", MODES)
def test_bmm_zero_expert_identical_to_modelopt(runs_root, gpt_oss_with_zero_experts, mode):
    """A zero expert inside a BMM tensor shares the tensor's (non-zero) s2, so unlike an all-zero
    linear there is no deliberate difference: every byte as ModelOpt writes it."""
    run = get_run("gpt_oss", mode, runs_root, src=gpt_oss_with_zero_experts)
    ours, theirs = read_tensors(run.fp4kit_runs["parity"]), read_tensors(run.modelopt)
    zeroed = theirs["model.layers.0.mlp.experts.gate_up_proj"][2]
    assert set(raw(zeroed)) == {0}, "the zero expert's codes are not all 0: fixture broken"
    q = quantized_modules(theirs)
    assert quantized_modules(ours) == q
    check_same_quantized_tensors(ours, theirs, q, f"gpt_oss zero experts {mode}", run.zero_input())


# ---------------------------------------------------------------------------------------------
# compressed-tensors (format B)

def format_b(run: Run) -> Path:
    """fp4kit's compressed-tensors output with the same options as its ModelOpt-format run."""
    if "ct" not in run.fp4kit_runs:
        run.fp4kit_runs["ct"] = fp4kit_quantize(
            run.src, run.modelopt.parent / "fp4kit-ct",
            run.parity_args + ["--format", "compressed-tensors"])
    return run.fp4kit_runs["ct"]


GLOBAL_SCALES = re.compile(r".*\.(weight_global_scale|input_global_scale)$")
# Families whose routed experts are 3-D BMM tensors: compressed-tensors has no 3-D NVFP4 layout
# (its ModelOpt converter and vLLM's compressed-tensors MoE path take per-expert 2-D linears), and
# vLLM's gpt-oss / Llama-4 loaders read these experts in ModelOpt's format only, so fp4kit refuses
# format B for them.
BMM_FAMILIES = {"gpt_oss", "llama4", "llama4_vl"}


def check_format_b_refused(run: Run, tmp_path: Path):
    """fp4kit's format-B refusal for a BMM family: exit 1 (not a crash, not a usage error), no
    output, and a message naming the option, a BMM tensor of the model and the way out."""
    out = tmp_path / "ct"
    cmd = [fp4kit_bin(), "quantize", run.src, out, "--scale-form", "cpu", *run.parity_args,
           "--format", "compressed-tensors"]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{proc.stderr}"
    bmm = {k for k in read_tensors(run.src) if BMM_MODULE.match(k)}
    assert bmm, "the model has no BMM expert tensor"
    assert any(f"'{m}'" in proc.stderr for m in bmm), proc.stderr
    assert "compressed-tensors" in proc.stderr and "--format modelopt" in proc.stderr, proc.stderr
    assert not out.exists() and not (tmp_path / "ct.partial").exists()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_compressed_tensors_converter_on_format_a_gives_format_b(runs_root, tmp_path, family, mode):
    """compressed-tensors' own ModelOpt -> compressed-tensors converter (rename + reciprocal
    globals), applied to fp4kit's format A, must give fp4kit's format B: same tensors, same bytes.
    One allowed difference: the converter keeps ModelOpt's 0-d global scales, fp4kit writes shape
    [1] as llm-compressor does (spec section 6); the 4 bytes must be equal."""
    from compressed_tensors.entrypoints.convert.convert_checkpoint import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4 import (
        ModelOptNvfp4Converter)
    run = get_run(family, mode, runs_root)
    if family in BMM_FAMILIES:
        check_format_b_refused(run, tmp_path)
        return
    ours_b = format_b(run)
    qc_b = json.loads((ours_b / "config.json").read_text())["quantization_config"]
    converted = tmp_path / "converted"
    convert_checkpoint(run.fp4kit_runs["parity"], converted,
                       ModelOptNvfp4Converter(ignore=qc_b["ignore"], targets=["Linear"]),
                       max_workers=1, device="cpu")
    theirs, ours = read_tensors(converted), read_tensors(ours_b)
    assert sorted(ours) == sorted(theirs), (f"only fp4kit: {sorted(set(ours) - set(theirs))}; "
                                            f"only converter: {sorted(set(theirs) - set(ours))}")
    assert any(k.endswith(".weight_packed") for k in ours)
    for name in sorted(theirs):
        a, b = ours[name], theirs[name]
        assert a.dtype == b.dtype, f"{name}: {a.dtype} vs {b.dtype}"
        if GLOBAL_SCALES.match(name):
            assert tuple(a.shape) == (1,) and b.numel() == 1, f"{name}: shape {list(a.shape)}"
        else:
            assert tuple(a.shape) == tuple(b.shape), f"{name}: {list(a.shape)} vs {list(b.shape)}"
        assert raw(a) == raw(b), f"{name}: fp4kit {a.flatten()[:4]} vs converter {b.flatten()[:4]}"

    if mode == "w4a4":  # the converter always declares W4A4 NVFP4, so its config is for W4A4 only
        qc_conv = json.loads((converted / "config.json").read_text())["quantization_config"]
        assert qc_b["format"] == qc_conv["format"] == "nvfp4-pack-quantized"
        assert qc_b["quant_method"] == qc_conv["quant_method"] == "compressed-tensors"
        [group_b] = qc_b["config_groups"].values()
        [group_conv] = qc_conv["config_groups"].values()
        for part in ("weights", "input_activations"):
            for key in ("num_bits", "type", "symmetric", "strategy", "group_size", "dynamic"):
                assert group_b[part][key] == group_conv[part][key], f"{part}.{key}"


def fp4kit_dequantize(packed: torch.Tensor, scale: torch.Tensor, s2: torch.Tensor, work: Path):
    """fp4kit's nvfp4_dequantize (build/fp4kit-nvfp4 --dequantize) as float32 [rows, cols]."""
    work.mkdir(parents=True, exist_ok=True)
    rows, cols = packed.shape[0], packed.shape[1] * 2
    (work / "weight.bin").write_bytes(raw(packed))
    (work / "weight_scale.bin").write_bytes(raw(scale))
    (work / "weight_scale_2.bin").write_bytes(raw(s2.float().reshape(())))
    run_checked([require_executable(tool_path("nvfp4")), "--dequantize", work, "--rows", rows,
                 "--cols", cols])
    return torch.from_numpy(np.fromfile(work / "dequant.bin", np.float32).reshape(rows, cols))


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between same-signed float tensors."""
    int_t = {torch.float32: torch.int32, torch.bfloat16: torch.int16}[a.dtype]
    return (a.view(int_t).long() - b.view(int_t).long()).abs().max().item()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", ["llama", "qwen3_moe", "deepseek_v3"])
def test_compressed_tensors_decompression_equals_fp4kit_dequantization(runs_root, tmp_path,
                                                                      family, mode):
    """compressed-tensors' NVFP4 decompression of fp4kit's format B against fp4kit's
    dequantization (w = e2m1 * scale * s2, from format A) for every quantized linear.

    Not bit-exact by construction: format B stores 1/s2 and compressed-tensors computes
    code * (scale / (1/s2)), two more roundings than fp4kit's product. So: its float32 path within
    2 float32 ulps, and its default decompressor (bfloat16) within 1 bfloat16 ulp of fp4kit's value
    rounded to bfloat16. A wrong code, block scale or global scale is off by far more."""
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    run = get_run(family, mode, runs_root)
    b_dir = format_b(run)
    qc = QuantizationConfig.model_validate(
        json.loads((b_dir / "config.json").read_text())["quantization_config"])
    [scheme] = qc.config_groups.values()
    b, a = read_tensors(b_dir), read_tensors(run.fp4kit_runs["parity"])
    modules = sorted(k[: -len(".weight_packed")] for k in b if k.endswith(".weight_packed"))
    assert modules
    for i, m in enumerate(modules):
        packed, scale, gscale = (b[f"{m}.weight_packed"], b[f"{m}.weight_scale"],
                                 b[f"{m}.weight_global_scale"])
        ref = fp4kit_dequantize(a[f"{m}.weight"], a[f"{m}.weight_scale"], a[f"{m}.weight_scale_2"],
                                tmp_path / str(i))
        rows, cols = ref.shape
        codes = unpack_fp4_from_uint8(packed, rows, cols, dtype=torch.float32)
        w32 = dequantize(codes, scale.float(), args=scheme.weights, dtype=torch.float32,
                         global_scale=gscale)
        assert w32.shape == ref.shape, m
        assert ulp_distance(w32, ref) <= 2, f"{m}: float32 decompression off by > 2 ulp"
        w16 = NVFP4PackedCompressor.decompress(
            {"weight_packed": packed, "weight_scale": scale, "weight_global_scale": gscale},
            scheme)["weight"]
        assert w16.dtype == torch.bfloat16
        assert ulp_distance(w16, ref.to(torch.bfloat16)) <= 1, f"{m}: bf16 decompression off"


def test_format_b_dense_model_loads_in_transformers(runs_root):
    """A dense model in format B (weight-only and W4A4) loads in transformers on CPU through
    compressed-tensors; weight-only logits equal those of the source model with fp4kit's
    dequantized weights put in, and both stay close to the source model's logits."""
    from transformers import AutoModelForCausalLM
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(5))
    logits = {}
    for mode in MODES:
        run = get_run("llama", mode, runs_root)
        model, info = AutoModelForCausalLM.from_pretrained(format_b(run), dtype=torch.bfloat16,
                                                           output_loading_info=True)
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            assert not info[kind], f"{mode} {kind}: {info[kind]}"
        with torch.no_grad():
            logits[mode] = model(ids).logits.float()

    run = get_run("llama", "w4a16", runs_root)
    source = AutoModelForCausalLM.from_pretrained(run.src, dtype=torch.bfloat16)
    a = read_tensors(run.fp4kit_runs["parity"])
    with torch.no_grad():
        src_logits = source(ids).logits.float()
        params = dict(source.named_parameters())
        for i, m in enumerate(sorted(quantized_modules(a))):
            params[f"{m}.weight"].copy_(fp4kit_dequantize(
                a[f"{m}.weight"], a[f"{m}.weight_scale"], a[f"{m}.weight_scale_2"],
                runs_root / "llama-dq" / str(i)).to(torch.bfloat16))
        dq_logits = source(ids).logits.float()

    def rel(x, y):
        return ((x - y).norm() / y.norm()).item()
    assert rel(logits["w4a16"], dq_logits) < 1e-2, rel(logits["w4a16"], dq_logits)
    for mode in MODES:
        cos = torch.nn.functional.cosine_similarity(logits[mode].flatten(), src_logits.flatten(), 0)
        assert cos > 0.9, f"{mode}: cosine {cos:.3f} to the source logits"


# Real checkpoints of ../shared/data (llama2.c stories260K weights in HF layouts): real tensor
# names, tied embeddings, Qwen2-MoE shared experts and biases, and Qwen3-MoE q/k projections with
# values around 1e-7..1e-12 (see the data README), all through ModelOpt and fp4kit, weight-only and
# W4A4.
SHARED_MODELS = {"stories260k-llama": "llama", "stories260k-qwen2moe": "qwen2_moe",
                 "stories260k-qwen3moe": "qwen3_moe", "stories260k-mixtral-routed": "mixtral"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(SHARED_MODELS))
def test_shared_checkpoints_identical_to_modelopt(runs_root, shared_data, name, mode):
    run = get_run(SHARED_MODELS[name], mode, runs_root, src=shared_data / "models" / name)
    ours, theirs = read_tensors(run.fp4kit_runs["parity"]), read_tensors(run.modelopt)
    q_ours, q_theirs = quantized_modules(ours), quantized_modules(theirs)
    assert q_theirs and q_ours == q_theirs, (f"only fp4kit: {sorted(q_ours - q_theirs)}; "
                                             f"only ModelOpt: {sorted(q_theirs - q_ours)}")
    check_same_quantized_tensors(ours, theirs, q_theirs, f"{name} {mode}", run.zero_input())
    candidates = weight_modules(run.src)
    assert excluded_modules(run.fp4kit_runs["parity"], candidates) == excluded_modules(
        run.modelopt, candidates)
