#!/usr/bin/env bash
# Runs llama-server with SmolLM2-135M on 127.0.0.1:PORT (default 8001) in the foreground,
# installing it first if needed (scripts/upstreams/install.sh; ~12 min the first time).
set -euo pipefail
port="${1:-8001}"
here="$(cd "$(dirname "$0")" && pwd)"
mapfile -t paths < <("$here/install.sh")
server="${paths[0]}"
model="${paths[1]}"
exec "$server" -m "$model" --host 127.0.0.1 --port "$port" -t 2 -c 4096 --parallel 4 \
  -a smollm2 --no-webui
