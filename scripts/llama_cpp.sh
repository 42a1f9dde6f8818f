#!/usr/bin/env bash
# Builds (once) llama.cpp's library for python/tests/test_gguf_llama_cpp.py, outside the clone,
# keyed by the version of llama-cpp-python whose PyPI source distribution vendors it (llama.cpp
# is not on PyPI as a wheel for this machine, nor in Debian 12). CPU only. Installs
# $root/lib/libllama.so (+ libggml*) and llama-cpp-python's ctypes bindings ($root/python), and
# writes $root to build/llama-cpp-path. The test drives llama.cpp through those bindings.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36  # vendors llama.cpp 0c1e570 (2026-10-01), which has GGML_TYPE_NVFP4
cache_root=${FP4KIT_VENV_CACHE:-/var/cache/fp4kit}
root="$cache_root/llama.cpp-$version"
if [ ! -f "$root/.complete" ]; then
  echo "== building llama.cpp from llama-cpp-python $version (PyPI sdist) into $root"
  venv=$(cat build/python-venv-path)
  rm -rf "$root"
  mkdir -p "$root/dl"
  "$venv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$root/dl"
  tar -xzf "$root/dl/llama_cpp_python-$version.tar.gz" -C "$root/dl"
  sdist="$root/dl/llama_cpp_python-$version"
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S "$sdist/vendor/llama.cpp" -B "$root/dl/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF "${launcher[@]}" > "$root/cmake.log"
  cmake --build "$root/dl/build" -j "$(nproc)" --target llama > "$root/build.log"
  mkdir -p "$root/lib" "$root/python"
  cp -P "$root/dl/build/bin/"lib*.so* "$root/lib/"
  cp -r "$sdist/llama_cpp" "$root/python/"
  rm -rf "$root/dl"
  touch "$root/.complete"
fi
mkdir -p build
echo "$root" > build/llama-cpp-path
