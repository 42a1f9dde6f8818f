"""OPENBLAS_CORETYPE before the extension loads (python/fp4kit/_blas.py): the package chooses
OpenBLAS's kernels as the fp4kit executable does when it runs itself again
(src/fp4kit/engine/cpu/ops.cpp, blas_coretype_override), and leaves a value the user set alone.

Run by scripts/test_python_package.sh against the installed wheel (see conftest.py).
"""
import os
import re
import subprocess
import sys

import pytest

from fp4kit import _blas
from conftest import fp4kit_bin, require_executable, run_checked

# OpenBLAS's pre-AVX cores: what it falls back to on a CPU it does not recognise.
OLD_CORES = {"Unknown", "Katmai", "Coppermine", "Northwood", "Prescott", "Banias", "Atom", "Core2",
             "Penryn", "Dunnington", "Nehalem"}


def cpu_flags() -> set:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def fresh_process(code: str, coretype=None) -> list:
    """Runs `code` in a new interpreter with OPENBLAS_CORETYPE unset (or set to `coretype`)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split("\n")


REPORT = "import os, fp4kit; print(os.environ.get('OPENBLAS_CORETYPE', '')); print(fp4kit._core._blas_core_name())"


def test_a_value_the_user_set_is_kept_and_no_probe_runs():
    env, probes = {"OPENBLAS_CORETYPE": "Zen"}, []
    assert _blas.set_coretype(env, probe=lambda: probes.append(1) or "SkylakeX") is None
    assert env == {"OPENBLAS_CORETYPE": "Zen"}
    assert probes == []


@pytest.mark.skipif(not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
                    reason="the rule answers on Linux x86-64 only")
def test_the_rules_answer_is_set_only_when_there_is_one():
    env = {}
    assert _blas.set_coretype(env, probe=lambda: "SkylakeX") == "SkylakeX"
    assert env == {"OPENBLAS_CORETYPE": "SkylakeX"}
    env = {}
    assert _blas.set_coretype(env, probe=lambda: "") is None
    assert env == {}


def test_import_sets_what_the_probe_answers_and_never_runs_pre_avx_kernels_on_an_avx2_cpu():
    env_value, core = fresh_process(REPORT)[:2]
    # The probe (the executable's C++ rule in a process that loaded OpenBLAS without the variable).
    assert env_value == _blas.probe_coretype()
    assert core  # OpenBLAS named its kernels
    if sys.platform.startswith("linux") and {"avx2", "fma"} <= cpu_flags():
        assert core not in OLD_CORES, f"OpenBLAS runs its {core} kernels on a CPU with AVX2 + FMA"
    if env_value:
        assert core == env_value


def test_the_users_value_reaches_openblas_unchanged():
    if not {"avx2", "fma"} <= cpu_flags():
        pytest.skip("SKIPPED: the CPU has no AVX2 + FMA for OpenBLAS's Haswell kernels")
    assert fresh_process(REPORT, coretype="Haswell")[:2] == ["Haswell", "Haswell"]


def test_the_package_and_the_executable_run_the_same_kernels(shared_data):
    cli = require_executable(fp4kit_bin())
    out = run_checked([cli, "eval", shared_data / "models/stories260k-llama", "--data",
                       shared_data / "text/tinystories_val.stories260k.u16", "--ctx", "8", "--chunks", "1",
                       "--device", "cpu"], env={k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"})
    executable_core = re.search(r"OpenBLAS (\w+)\)", out.stdout).group(1)
    assert fresh_process(REPORT)[1] == executable_core
