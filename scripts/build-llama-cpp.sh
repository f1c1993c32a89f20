#!/usr/bin/env bash
# Build llama-cpp-python (the GGUF runtime of `tunesmith export --format gguf|ollama` and its parity
# check) once into a cached wheel, then install it into .venv. It has no wheel on the package index
# for this platform, and building it from source takes 15-25 minutes on 2 cores; the wheel is kept
# in ~/.cache/tunesmith/wheels (TUNESMITH_WHEELS) and reused by every later install.
#   ./scripts/build-llama-cpp.sh               build if not cached, install
#   ./scripts/build-llama-cpp.sh --cached      install only from the cache: exit 1 if nothing is cached
#   ./scripts/build-llama-cpp.sh --wheel-only  build into the cache, install nothing (CI: beside the suite)
#
# The build is portable, never -march=native: a cached wheel may be installed on another machine, and
# CPUs differ between machines here (one had AVX-512, the next AVX2 only). On x86_64 it assumes
# AVX2 + FMA + F16C when this CPU has them (every x86_64 machine seen here), else plain SSE.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
mode="${1:-install}"
if [ "$mode" != "--wheel-only" ] && python -c "import sys, importlib.metadata as m; sys.exit(m.version('llama-cpp-python') != '$version')" 2>/dev/null; then
  echo "llama-cpp-python $version is installed"
  exit 0
fi
flags="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"
variant="generic"
if [ "$(uname -m)" = "x86_64" ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && grep -qw f16c /proc/cpuinfo; then
  flags="$flags -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  variant="avx2"
fi
wheels="${TUNESMITH_WHEELS:-$HOME/.cache/tunesmith/wheels}/llama-cpp-python-$version-$(uname -m)-$variant"
mkdir -p "$wheels"
if ! ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  [ "$mode" = "--cached" ] && exit 1
  echo "building llama-cpp-python $version ($variant) into $wheels: 15-25 minutes on 2 cores ..."
  started=$(date +%s)
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip wheel --quiet --no-deps --no-binary llama-cpp-python -w "$wheels" "llama-cpp-python==$version"
  echo "built in $(( $(date +%s) - started )) s"
fi
[ "$mode" = "--wheel-only" ] && exit 0
pip install --quiet -c constraints.txt "$wheels"/llama_cpp_python-"$version"-*.whl
python -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'installed')"
