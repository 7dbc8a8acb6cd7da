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
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
source scripts/lib.sh

start_upstream 2
port=$(free_port)
admin=$(free_port)
start_signet signet "$port" 2 "" "  admin:
    listen: \"127.0.0.1:$admin\"
  signatures:
    ttl: 30m
    max_entries: 200000"

timeout 1800 "$bin/signet-load" soak --target "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
    --pid "$signet_pid" --log "$work/signet.log" "$@"
