#!/usr/bin/env bash
# The full soak (issue 9): 100,000 requests at concurrency 64 through a release build of signet
# in front of signet-mock-upstream on loopback, with ~10 % client aborts and ~5 % upstream
# faults, then signet-load checks every signature, every unsigned outcome, hangs and RSS.
#
#   scripts/soak.sh [--requests N] [--concurrency C] [other signet-load soak flags]
#
# Prints signet-load's JSON report; exits non-zero on any violation. Bounded in time: each
# request has a 60 s limit and the whole run is killed after 30 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins >&2
bin=target/release
work=$(mktemp -d)
cleanup() {
    [[ -n "${signet_pid:-}" ]] && kill "$signet_pid" 2>/dev/null || true
    [[ -n "${upstream_pid:-}" ]] && kill "$upstream_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin/signet-mock-upstream" --listen 127.0.0.1:0 >"$work/upstream.out" 2>&1 &
upstream_pid=$!
for _ in $(seq 100); do grep -q LISTENING "$work/upstream.out" 2>/dev/null && break; sleep 0.1; done
upstream=$(awk '/LISTENING/ {print $2; exit}' "$work/upstream.out")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/soak.yaml" <<YAML
version: 1
threads: 2
grace_period_seconds: 1
graceful_shutdown_timeout_seconds: 1
pid_file: $work/signet.pid
upgrade_sock: $work/upgrade.sock
signet:
  listen: "127.0.0.1:$port"
  upstream: "http://$upstream"
  attestation:
    mode: dev
    gpu: none
  admin:
    listen: "127.0.0.1:$admin"
  signatures:
    ttl: 30m
    max_entries: 200000
YAML
"$bin/signet" serve -c "$work/soak.yaml" 2>"$work/signet.log" &
signet_pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done

timeout 1800 "$bin/signet-load" soak --target "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
    --pid "$signet_pid" --log "$work/signet.log" "$@"
