#!/usr/bin/env bash
# A/B of signet builds on the same harness: this checkout's mock upstream and signet-load
# (cargo build --release --bins first), and the signet binaries named as LABEL=PATH; one
# proxy worker pinned to the last CPU, the builds alternated twice, JSON, 200-event burst
# streams and the same streams coalesced into 16 KiB upstream writes, at c=64, 3,000 requests
# each (KINDS="json burst coalesced paced" picks the shapes; paced: one event per 500 µs).
# Prints requests/s and signet's CPU per request.
#
#   bench/ab.sh old=/path/to/old/target/release/signet new=target/release/signet
#
# Each PATH must be a file named `signet` (the harness starts DIR/signet from its directory).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
source scripts/lib.sh
ulimit -n 65536 2>/dev/null || true
start_upstream 1 "$load_cpus"
run() {
  local label=$1 signet_bin=$2 kind=$3
  local port; port=$(free_port)
  local saved=$bin; bin=$(dirname "$signet_bin")
  start_signet "ab-$label-$kind" "$port" 1 "$proxy_cpu"
  bin=$saved
  local flags=()
  case $kind in
    burst) flags=(--stream) ;;
    coalesced) flags=(--stream --write-bytes 16384) ;;
    paced) flags=(--stream --delay-us 500) ;;
  esac
  taskset -c "$load_cpus" "$bin/signet-load" bench --target "127.0.0.1:$port" --concurrency 64 --requests 3000 --warmup 300 --cpu-pid "$signet_pid" "${flags[@]}" --label "$label" \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print('$label $kind', {k:v for k,v in r.items() if k in ('requests_per_second','cpu_us_per_request','rps','cpu_per_request_us')} or r)"
  kill "$signet_pid"; wait "$signet_pid" 2>/dev/null || true
}
(($#)) || { echo "usage: $0 LABEL=PATH..." >&2; exit 2; }
for round in 1 2; do
  for kind in ${KINDS:-json burst coalesced}; do
    for pair in "$@"; do
      run "${pair%%=*}" "$(realpath "${pair#*=}")" "$kind"
    done
  done
done
