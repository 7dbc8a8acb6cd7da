#!/usr/bin/env bash
# Profiles signet under load with perf: one signet thread pinned to the last CPU, the upstream
# and signet-load on the others, 64 concurrent requests of the given traffic, perf sampling
# signet's process for 8 seconds. Prints the split kernel/user and the top symbols.
#
#   bench/profile.sh [burst|coalesced|paced|json]     (needs perf: apt-get install linux-perf)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-burst}
case $kind in
    burst) flags=(--stream) ;;
    coalesced) flags=(--stream --write-bytes 16384) ;;
    paced) flags=(--stream --delay-us 500) ;;
    json) flags=() ;;
    *) echo "usage: $0 [burst|coalesced|paced|json]" >&2; exit 2 ;;
esac
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
cargo build --release --bins >&2
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
source scripts/lib.sh

start_upstream 1 "$load_cpus"
port=$(free_port)
start_signet signet "$port" 1 "$proxy_cpu"

load() { taskset -c "$load_cpus" "$bin/signet-load" bench --target "127.0.0.1:$port" --concurrency 64 "${flags[@]}" "$@"; }
load --requests 500 >/dev/null # warm-up
# Enough requests to outlast the 8-second sample.
perf record -F 2999 -g -p "$signet_pid" -o "$work/perf.data" -- sleep 8 2>/dev/null &
perf_pid=$!
load --requests 200000 --warmup 0 --cpu-pid "$signet_pid" >"$work/load.json" &
load_pid=$!
wait "$perf_pid" || true
kill "$load_pid" 2>/dev/null || true

echo "== $kind, c=64: where signet's CPU goes"
perf report -i "$work/perf.data" --no-children --sort dso -g none 2>/dev/null | grep '%' | head -6
echo "== top user-space symbols"
perf report -i "$work/perf.data" --no-children --sort sym -g none 2>/dev/null | grep '\[\.\]' | head -25
echo "== top kernel symbols"
perf report -i "$work/perf.data" --no-children --sort sym -g none 2>/dev/null | grep '\[k\]' | head -10
