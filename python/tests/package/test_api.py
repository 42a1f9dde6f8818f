"""The installed fp4kit package (issue 17) against the fp4kit command, on the shared real checkpoints.

Run by scripts/test_python_package.sh in a fresh venv holding only the wheel (see there). Every
job is run twice, through `import fp4kit` and through the executable in FP4KIT_BIN, and the
outputs must be equal byte for byte; errors must carry the message the command prints; NVFP4
tensors read through the package must decode as an independent bit-level decoding says.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import fp4kit
from conftest import REPO, fp4kit_bin, require_executable, run_checked


@pytest.fixture(scope="session")
def cli():
    """The fp4kit executable of the build (FP4KIT_BIN) the API is compared with."""
    return require_executable(fp4kit_bin())

LLAMA = "models/stories260k-llama"
MIXTRAL = "models/stories260k-mixtral"
TEXT = "text/tinystories_val.txt"


def files_of(d: Path) -> dict:
    if d.is_file():
        return {"": d.read_bytes()}
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def assert_same_tree(a: Path, b: Path):
    fa, fb = files_of(a), files_of(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], f"{name} differs between the API and the CLI output"


def without_times(doc, out=None):
    """Drops the measured durations (the only fields that may differ between two runs), and
    writes the output directory `out` as OUT."""
    if out is not None:
        doc = json.loads(json.dumps(doc).replace(json.dumps(str(out))[1:-1], "OUT"))
    if isinstance(doc, dict):
        return {k: without_times(v) for k, v in doc.items()
                if k not in ("seconds", "params_per_second", "mb_per_second")}
    if isinstance(doc, list):
        return [without_times(v) for v in doc]
    return doc


def cli_error(cli, *args) -> tuple:
    """(exit code, message) of `fp4kit` for bad input (1) or wrong usage (2), without the
    'fp4kit: error: ' prefix."""
    proc = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode in (1, 2), proc.stderr + proc.stdout
    prefix = "fp4kit: error: "  # after any "fp4kit: warning: " lines
    assert prefix in proc.stderr, proc.stderr
    return proc.returncode, proc.stderr.split(prefix, 1)[1].rstrip("\n")


# --- the installation --------------------------------------------------------------------------

def test_package_is_the_installed_wheel_with_command_stubs_and_markers():
    site = Path(sysconfig.get_path("purelib")).resolve()
    pkg = Path(fp4kit.__file__).resolve().parent
    assert pkg.parent == site, f"fp4kit imported from {pkg}, not from the venv's {site}"
    assert REPO not in pkg.parents
    assert (pkg / "py.typed").is_file()
    stub = (pkg / "_core.pyi").read_text()
    for fn in ("def quantize(", "def verify(", "def inspect(", "def calibrate(", "def eval(",
               "class Checkpoint"):
        assert fn in stub
    exe = shutil.which("fp4kit")
    assert exe and Path(exe).resolve().parent == Path(sys.executable).parent.resolve()
    out = run_checked([exe, "--version"]).stdout.strip()
    assert out == f"fp4kit {fp4kit.__version__}"


def needed_libraries(path: Path) -> set:
    out = run_checked(["readelf", "-d", path]).stdout
    return {line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line}


def test_runtime_libraries_are_the_ones_the_readme_names():
    """The wheel bundles no library: what its binaries load must be in README's list."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- runtime-libraries -->")[1].split("<!-- /runtime-libraries -->")[0]
    named = {cell.strip().strip("`") for line in section.splitlines() if line.startswith("|")
             for cell in line.split("|")[1:2]} - {"soname", "---", ""}
    ext = next(Path(fp4kit._core.__file__).parent.glob("_core.*.so"))
    used = needed_libraries(ext) | needed_libraries(Path(shutil.which("fp4kit")))
    assert used <= named, f"not named in README: {sorted(used - named)}"
    assert "libopenblas.so.0" in used  # the list is read from the binaries, not empty


# --- quantize ----------------------------------------------------------------------------------

CASES = {
    "llama-modelopt-w4a16": (LLAMA, dict(weights_only=True), ["--weights-only"]),
    "llama-ct-w4a16-exclude": (LLAMA, dict(weights_only=True, format="compressed-tensors",
                                           exclude=["*.self_attn.o_proj"]),
                               ["--weights-only", "--format", "compressed-tensors",
                                "--exclude", "*.self_attn.o_proj"]),
    "mixtral-modelopt-w4a16": (MIXTRAL, dict(weights_only=True, verify="full"),
                               ["--weights-only", "--verify", "full"]),
    "llama-modelopt-w4a16-mse": (LLAMA, dict(weights_only=True, scales="mse", global_norm=256),
                                 ["--weights-only", "--scales", "mse", "--global-norm", "256"]),
    "mixtral-gguf-w4a16": (MIXTRAL, dict(weights_only=True, format="gguf"),
                           ["--weights-only", "--format", "gguf"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_quantize_writes_the_cli_bytes_and_returns_its_report(case, cli, shared_data, tmp_path):
    model, kwargs, flags = CASES[case]
    src = shared_data / model
    suffix = ".gguf" if kwargs.get("format") == "gguf" else ""
    cli_out, api_out = tmp_path / f"cli{suffix}", tmp_path / f"api{suffix}"
    run_checked([cli, "quantize", src, cli_out, *flags, "--report", tmp_path / "cli.json"])
    seen = []
    report = fp4kit.quantize(src, api_out, progress=lambda d, t, n: seen.append((d, t, n)), **kwargs)
    assert_same_tree(cli_out, api_out)
    cli_report = json.loads((tmp_path / "cli.json").read_text())
    assert without_times(report.raw, api_out) == without_times(cli_report, cli_out)
    assert report.summary["quantized"] == cli_report["summary"]["quantized"] > 0
    # One call per tensor written, in order, naming the report's tensors.
    assert [d for d, _, _ in seen] == list(range(1, len(seen) + 1))
    assert {t for _, t, _ in seen} == {len(seen)}
    assert {n for _, _, n in seen} == {t["name"] for t in report.tensors}


def test_w4a4_calibrate_and_quantize_match_the_cli(cli, shared_data, tmp_path):
    src, data = shared_data / MIXTRAL, shared_data / TEXT
    run_checked([cli, "calibrate", src, "--data", data, "-o", tmp_path / "cli.safetensors",
                 "--samples", 4, "--seq-len", 64, "--hessian", "raw", "--full-xtx", "--device", "cpu"])
    layers = []
    r = fp4kit.calibrate(src, data, tmp_path / "api.safetensors", samples=4, seq_len=64,
                         hessian="raw", full_xtx=True, device="cpu",
                         progress=lambda done, n: layers.append((done, n)))
    assert (tmp_path / "api.safetensors").read_bytes() == (tmp_path / "cli.safetensors").read_bytes()
    assert (r.samples, r.seq_len, r.tokens) == (4, 64, 256)
    stats = load_file(str(tmp_path / "api.safetensors"))
    assert r.linears == sum(k.endswith(".input_amax") for k in stats) > 0
    assert layers == [(i, 5) for i in range(1, 6)]  # stories260K has 5 layers

    run_checked([cli, "quantize", src, tmp_path / "cli", "--stats", tmp_path / "cli.safetensors",
                 "--format", "compressed-tensors", "--scales", "hessian",
                 "--hessian-min-tokens", 16, "--gptq"])
    report = fp4kit.quantize(src, tmp_path / "api", stats=tmp_path / "api.safetensors",
                             format="compressed-tensors", scales="hessian", hessian_min_tokens=16,
                             gptq=True)
    assert_same_tree(tmp_path / "cli", tmp_path / "api")
    assert "hessian" in json.dumps(report.tensors)
    assert any(n.endswith(".input_global_scale") for n in fp4kit.Checkpoint(tmp_path / "api").tensor_names)


def test_progress_drives_a_tqdm_bar(shared_data, tmp_path):
    tqdm = pytest.importorskip("tqdm").tqdm
    with tqdm(disable=False, file=open(os.devnull, "w")) as bar:
        report = fp4kit.quantize(shared_data / LLAMA, tmp_path / "out", weights_only=True,
                                 progress=bar)
        assert bar.total == bar.n == len(report.tensors) > 0


def test_dry_run_returns_the_plan_and_writes_nothing(cli, shared_data, tmp_path):
    src = shared_data / LLAMA
    run_checked([cli, "quantize", src, "--dry-run", "--weights-only", "--plan-json", tmp_path / "cli.json"])
    report = fp4kit.quantize(src, weights_only=True, dry_run=True)
    assert report.plan == json.loads((tmp_path / "cli.json").read_text())
    assert list(tmp_path.iterdir()) == [tmp_path / "cli.json"]


# --- errors carry the command's messages --------------------------------------------------------

def test_errors_carry_the_cli_messages(cli, shared_data, tmp_path):
    src = shared_data / LLAMA
    cases = [
        (["quantize", tmp_path / "missing", tmp_path / "o1", "--weights-only"],
         lambda: fp4kit.quantize(tmp_path / "missing", tmp_path / "o1", weights_only=True)),
        (["quantize", src, tmp_path / "o2"], lambda: fp4kit.quantize(src, tmp_path / "o2")),
        (["quantize", src, tmp_path / "o3", "--weights-only", "--max-shard-size", "lots"],
         lambda: fp4kit.quantize(src, tmp_path / "o3", weights_only=True, max_shard_size="lots")),
        (["verify", src, "--report", tmp_path / "no" / "r.json"],
         lambda: fp4kit.verify(src, report=tmp_path / "no" / "r.json")),
        (["inspect", tmp_path / "missing"], lambda: fp4kit.inspect(tmp_path / "missing")),
        (["eval", src], lambda: fp4kit.eval(src)),
        (["calibrate", src, "--data", tmp_path / "none.txt", "-o", tmp_path / "s.safetensors"],
         lambda: fp4kit.calibrate(src, tmp_path / "none.txt", tmp_path / "s.safetensors")),
    ]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    cases.append((["quantize", src, tmp_path / "busy", "--weights-only"],
                  lambda: fp4kit.quantize(src, tmp_path / "busy", weights_only=True)))
    codes = set()
    for args, call in cases:
        code, expected = cli_error(cli, *args)
        with pytest.raises(fp4kit.Error) as e:
            call()
        assert str(e.value) == expected, args
        assert isinstance(e.value, fp4kit.UsageError) == (code == 2), args
        codes.add(code)
    assert codes == {1, 2}
    assert not (tmp_path / "o2").exists() and (tmp_path / "busy" / "x").read_text() == "x"


def test_usage_errors_are_value_errors(shared_data, tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        fp4kit._core.quantize(src=str(shared_data / LLAMA), out=str(tmp_path / "o"), colour=1)
    with pytest.raises(ValueError, match="format"):
        fp4kit.quantize(shared_data / LLAMA, tmp_path / "o", weights_only=True, format="awq")
    with pytest.raises(ValueError, match="rules"):
        fp4kit.quantize(shared_data / LLAMA, tmp_path / "o", weights_only=True, rules=[("keep", "*")])
    assert not (tmp_path / "o").exists()


# --- verify / inspect / eval ---------------------------------------------------------------------

def test_verify_inspect_eval_return_the_cli_documents(cli, shared_data, tmp_path):
    src = shared_data / LLAMA
    q = tmp_path / "q"
    run_checked([cli, "quantize", src, q, "--weights-only"])

    run_checked([cli, "verify", q, "--source", src, "--report", tmp_path / "v.json"])
    v = fp4kit.verify(q, source=src)
    assert v.ok and not v.errors
    assert without_times(v.raw) == without_times(json.loads((tmp_path / "v.json").read_text()))
    assert v.raw["numeric"]["tensors"]

    assert fp4kit.inspect(q) == json.loads(run_checked([cli, "inspect", q, "--json"]).stdout)

    args = ["--base", src, "--data", shared_data / TEXT, "--ctx", 64, "--chunks", 2, "--device", "cpu"]
    cli = json.loads(run_checked([cli, "eval", q, *args, "--json"]).stdout)
    api = fp4kit.eval(q, base=src, data=shared_data / TEXT, ctx=64, chunks=2, device="cpu")
    assert without_times(api) == without_times(cli)
    assert api["kl_divergence"] and api["ppl"]["value"] > 1


def test_verify_findings_on_a_broken_checkpoint(cli, shared_data, tmp_path):
    """A failed check is a finding (the CLI exits 1 with the same findings), not an exception."""
    q = tmp_path / "q"
    fp4kit.quantize(shared_data / LLAMA, q, weights_only=True)
    # Exclusion lists that no longer name the BF16 lm_head / down_proj: unquantized layers that
    # claim to be NVFP4.
    cfg = json.loads((q / "config.json").read_text())
    cfg["quantization_config"]["ignore"] = []
    (q / "config.json").write_text(json.dumps(cfg))
    hf = json.loads((q / "hf_quant_config.json").read_text())
    hf["quantization"]["exclude_modules"] = []
    (q / "hf_quant_config.json").write_text(json.dumps(hf))
    proc = subprocess.run([str(cli), "verify", q, "--report", tmp_path / "v.json"],
                          capture_output=True, text=True)
    v = fp4kit.verify(q)
    assert proc.returncode == 1 and not v.ok and v.errors
    cli = json.loads((tmp_path / "v.json").read_text())
    assert [f.__dict__ for f in v.findings] == cli["findings"]


# --- tensors as numpy arrays, dequantization -----------------------------------------------------

def e2m1_reference(packed: np.ndarray) -> np.ndarray:
    """E2M1 from its bit fields (sign, 2-bit exponent with bias 1, 1-bit mantissa), float64."""
    p = packed.astype(np.int64)
    codes = np.empty(p.shape[:-1] + (p.shape[-1] * 2,), dtype=np.int64)
    codes[..., 0::2], codes[..., 1::2] = p & 0xF, p >> 4
    s, e, m = codes >> 3, (codes >> 1) & 3, codes & 1
    mag = np.where(e == 0, m * 0.5, (1 + m * 0.5) * 2.0 ** (e - 1))
    return np.where(s == 1, -mag, mag)


def e4m3_reference(codes: np.ndarray) -> np.ndarray:
    """E4M3FN through torch's float8_e4m3fn (another implementation), as float64."""
    return torch.from_numpy(np.ascontiguousarray(codes)).view(torch.float8_e4m3fn).double().numpy()


@pytest.mark.parametrize("fmt", ["modelopt", "compressed-tensors"])
def test_nvfp4_tensors_as_numpy_and_dequantized(fmt, shared_data, tmp_path):
    src = shared_data / MIXTRAL
    q = tmp_path / "q"
    fp4kit.quantize(src, q, weights_only=True, format=fmt)
    ck = fp4kit.Checkpoint(q)
    stored = {}
    for f in q.glob("*.safetensors"):
        stored.update(load_file(str(f)))  # the safetensors package reads the same bytes
    source = fp4kit.Checkpoint(src)
    weights = ck.nvfp4_weights()
    assert len(weights) > 20 and {w.format for w in weights.values()} == {fmt}
    for name, w in weights.items():
        codes_name = name + (".weight_packed" if fmt == "compressed-tensors" else ".weight")
        np.testing.assert_array_equal(w.codes, stored[codes_name].numpy())
        np.testing.assert_array_equal(w.block_scales,
                                      stored[name + ".weight_scale"].view(torch.uint8).numpy())
        gname = ".weight_global_scale" if fmt == "compressed-tensors" else ".weight_scale_2"
        assert np.float32(w.global_scale) == stored[name + gname].reshape(-1)[0].item()
        assert w.input_scale is None
        n, k = w.shape
        scale = np.repeat(e4m3_reference(w.block_scales), 16, axis=1)
        g = np.float64(np.float32(w.global_scale))
        # float64 products of exact float32 factors, rounded once: the loaders' float32 arithmetic
        if fmt == "compressed-tensors":
            ref = (e2m1_reference(w.codes) * (scale / g).astype(np.float32)).astype(np.float32)
        else:
            ref = ((e2m1_reference(w.codes) * scale).astype(np.float32) * g).astype(np.float32)
        ours_np = w.dequantize()
        ours_cpp = ck.dequantize(name)
        assert ours_cpp.shape == ours_np.shape == (n, k) and ours_cpp.dtype == np.float32
        np.testing.assert_array_equal(ours_np, ref)
        np.testing.assert_array_equal(ours_cpp, ref)
        # And it encodes the source weight (NVFP4's error, not a wrong layout).
        original = source.dequantize(name)
        rel = np.linalg.norm(ref - original) / np.linalg.norm(original)
        assert rel < 0.2, (name, rel)
    # Unquantized tensors come back as stored (BF16 widened to float32).
    kept = [t for t in ck.tensor_names if ck.info(t)[0] == "BF16"]
    assert kept
    for t in kept:
        np.testing.assert_array_equal(ck.tensor(t), stored[t].float().numpy())
