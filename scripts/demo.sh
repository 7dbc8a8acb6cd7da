#!/usr/bin/env bash
# One-command demo on a fresh machine: installs what is missing, builds signet, starts the
# bundled OpenAI-format upstream (signet-mock-upstream) on 127.0.0.1:8001 and signet on
# conf/dev.yaml (127.0.0.1:8000, DEV attestation), sends a streamed completion through it,
# fetches and checks its signature, then keeps the gateway running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo build --release --locked --bins

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

./target/release/signet-mock-upstream --listen 127.0.0.1:8001 --replay-dir tests/fixtures &
pids+=($!)
./target/release/signet serve -c conf/dev.yaml &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8000/health >/dev/null 2>&1 && break
  sleep 0.1
done

echo
echo "== streamed completion through signet"
response=$(curl -sS -N http://127.0.0.1:8000/v1/chat/completions \
  -H 'Content-Type: application/json' \
  -d '{"model":"mock-model","messages":[{"role":"user","content":"Hello"}],"stream":true}')
echo "$response" | head -n 4
id=$(echo "$response" | sed -n 's/^data: {.*"id":"\([^"]*\)".*/\1/p' | head -n 1)

echo "== signature for $id"
curl -sS "http://127.0.0.1:8000/v1/signature/$id"
echo
echo
echo "signet is running on http://127.0.0.1:8000 (upstream http://127.0.0.1:8001); Ctrl-C stops it."
wait
