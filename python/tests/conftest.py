"""Shared fixtures of the conformance tests against the real third-party tools (CPU only).

Environment:
  FP4KIT_BIN          the fp4kit executable (default: build/fp4kit of the repo); the helper tools
                      fp4kit-<name> are looked up beside it.
  FP4KIT_SHARED_DATA  ../shared/data by default. Tests needing it FAIL under CI=true when it is
                      missing and SKIP (visibly, run pytest with -rs) otherwise.
"""
import os
import subprocess
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# python/tests/package tests the installed fp4kit package; scripts/test_python_package.sh installs
# it into a fresh venv and runs them there (with FP4KIT_PACKAGE_TESTS=1).
if os.environ.get("FP4KIT_PACKAGE_TESTS") != "1":
    collect_ignore = ["package"]

# ModelOpt and transformers are chatty on import (untested-version and CUDA-missing warnings):
# none of that is what these tests check.
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


def running_in_ci() -> bool:
    return os.environ.get("CI") == "true"


def fp4kit_bin() -> Path:
    return Path(os.environ.get("FP4KIT_BIN", REPO / "build" / "fp4kit")).resolve()


def tool_path(name: str) -> Path:
    """build/fp4kit-<name>: a helper executable of tools/<name>_main.cpp."""
    return fp4kit_bin().parent / f"fp4kit-{name}"


def require_executable(path: Path) -> Path:
    # A missing binary is a broken build, not missing data: always a failure, never a skip.
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not built (build the repo first; set FP4KIT_BIN to use another build)")
    return path


def run_checked(cmd, **kw) -> subprocess.CompletedProcess:
    """Runs a command, failing the test with its stderr when it exits non-zero."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout}")
    return proc


@pytest.fixture(scope="session")
def fp4kit():
    return require_executable(fp4kit_bin())


@pytest.fixture(scope="session")
def shared_data():
    path = Path(os.environ.get("FP4KIT_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        if running_in_ci():
            pytest.fail(f"shared data missing under CI: {path}")
        pytest.skip(f"SKIPPED: shared data not found at {path} (set FP4KIT_SHARED_DATA)")
    return path
