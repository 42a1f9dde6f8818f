"""OpenBLAS's kernels for the extension, chosen as the ``fp4kit`` executable chooses them.

OpenBLAS picks its kernels from CPUID once, when it loads. Under some sandboxes (gVisor on the lent
H200 machine) it does not recognise the CPU and falls back to its generic SSE3 "Prescott" kernels
(4x slower sgemm there). The executable then runs itself again with ``OPENBLAS_CORETYPE`` naming
the kernels the CPU runs (``engine::blas_coretype_override`` in src/fp4kit/engine/cpu/ops.cpp). A
Python process cannot run itself again, so the package sets the variable before the extension
(and with it OpenBLAS) loads, only when the user has not set it. The rule needs OpenBLAS's own
detection, which only a process that has not loaded it yet can see: a child process loads the
extension file alone (not the package) and answers with the executable's rule, the same C++ code.
"""
from __future__ import annotations

import glob
import importlib.machinery
import os
import subprocess
import sys
from typing import Callable, MutableMapping, Optional

_CHILD = """
import importlib.machinery, importlib.util, sys
loader = importlib.machinery.ExtensionFileLoader("fp4kit._core", sys.argv[1])
spec = importlib.util.spec_from_file_location("fp4kit._core", sys.argv[1], loader=loader)
core = importlib.util.module_from_spec(spec)
loader.exec_module(core)
print(core._blas_coretype_override())
"""


def _extension_file() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found = glob.glob(os.path.join(here, "_core" + suffix))
        if found:
            return found[0]
    return None


def probe_coretype() -> str:
    """The executable's rule, answered by a child process that loads the extension afresh: the
    OPENBLAS_CORETYPE to set, or '' (OpenBLAS recognised the CPU, or the probe could not run: then
    nothing changes, as when the executable cannot run itself again)."""
    ext = _extension_file()
    if ext is None:
        return ""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, ext], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    core = done.stdout.strip()
    return core if core.isalnum() else ""


def set_coretype(environ: MutableMapping[str, str] = os.environ,
                 probe: Callable[[], str] = probe_coretype) -> Optional[str]:
    """Sets OPENBLAS_CORETYPE in `environ` as the executable would, unless the user set it (their
    choice, whatever it is). Returns the value set, or None. Linux x86-64 only (the only place the
    rule can answer)."""
    if "OPENBLAS_CORETYPE" in environ:
        return None
    if not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"):
        return None
    core = probe()
    if not core:
        return None
    environ["OPENBLAS_CORETYPE"] = core
    return core
