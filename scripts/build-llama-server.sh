#!/usr/bin/env bash
# llama.cpp's llama-server, built once per machine from the llama.cpp source vendored in the pinned
# llama-cpp-python source distribution (PyPI is the only network here), and cached outside the checkout:
#   $FSLM_BUILD_CACHE/llama-server-<version>-<flags hash>/bin/llama-server   (default cache: ~/.cache/fslm-build)
# Prints the binary's path. Portable flags (a native build crashed on an AMX machine); AVX-512 only where
# the CPU has it; no UI and no curl, so the build fetches nothing. About 12 minutes on 2 cores.
set -euo pipefail
VERSION=0.3.36
PYTHON=${PYTHON:-python3}
CACHE=${FSLM_BUILD_CACHE:-$HOME/.cache/fslm-build}
AVX512=$(grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo ON || echo OFF)
FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=$AVX512 \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON \
-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release"
KEY=$(printf '%s' "$VERSION $FLAGS" | sha256sum | cut -c1-12)
TARGET="$CACHE/llama-server-$VERSION-$KEY"
if [ -x "$TARGET/bin/llama-server" ]; then
    echo "$TARGET/bin/llama-server"
    exit 0
fi
command -v cmake >/dev/null && command -v c++ >/dev/null || {
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake g++ make >&2
}
mkdir -p "$CACHE"
SOURCE="$CACHE/llama_cpp_python-$VERSION"
if [ ! -d "$SOURCE/vendor/llama.cpp" ]; then
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$CACHE" >&2
    tar -xzf "$CACHE/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE"
fi
BUILD=$(mktemp -d "$CACHE/build-XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
# shellcheck disable=SC2086  # FLAGS is a list of arguments
cmake -S "$SOURCE/vendor/llama.cpp" -B "$BUILD" $FLAGS >&2
cmake --build "$BUILD" --target llama-server -j "$(nproc)" >&2
STAGING="$TARGET.partial-$$"
mkdir -p "$STAGING/bin"
cp "$BUILD/bin/llama-server" "$STAGING/bin/"
ln -sfn "$SOURCE/vendor/llama.cpp" "$STAGING/llama.cpp"  # its convert_lora_to_gguf.py, for fslm export
mv "$STAGING" "$TARGET"  # whole or not at all
echo "$TARGET/bin/llama-server"
