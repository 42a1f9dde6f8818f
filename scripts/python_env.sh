#!/usr/bin/env bash
# Creates (once) the Python venv for the conformance tests, outside the clone, keyed by the hash of
# python/requirements.txt so CI reuses it across clones. Prints nothing else when it is ready.
# The venv path is written to build/python-venv-path for scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
req=python/requirements.txt
key=$(sha256sum "$req" | cut -c1-16)
cache_root=${FP4KIT_VENV_CACHE:-/var/cache/fp4kit}
venv="$cache_root/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "== creating Python venv $venv (PyPI, pinned in $req)"
  rm -rf "$venv"
  mkdir -p "$cache_root"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$req"
  touch "$venv/.complete"
fi
mkdir -p build
echo "$venv" > build/python-venv-path
