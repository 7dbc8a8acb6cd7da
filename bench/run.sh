#!/usr/bin/env bash
# signet's benchmark: the same traffic straight to the upstream, through nginx (a plain
# reverse proxy, proxy_buffering off, no signing) and through signet (signing every response),
# side by side, on this machine.
#
#   bench/run.sh [--quick]
#
# Builds in release mode, installs nginx-light from Debian if missing, starts
# signet-mock-upstream (the upstream), nginx and signet, and runs signet-load over the matrix
# {direct, nginx, signet, signet-redis} x concurrency {1, 16, 64, 256} x {200-event stream,
# JSON}, where signet-redis is a second signet whose signature store mirrors every record to
# a local redis-server (installed from Debian if missing), plus an encrypted cell: the burst
# stream with ACI E2EE v2 (x25519) through signet alone at c=1 and c=64 (nobody else can
# decrypt), beside the plain burst cell so the CPU encryption adds per stream reads directly. Then it measures memory per open
# stream (1,000 slow streams held through signet) and per stored signature (1,000,000
# records). It prints a table with the ratios and writes every figure to
# bench/results/<time>.json.
#
# CPU placement, so the proxies are compared on equal terms: each proxy runs one worker
# (nginx worker_processes 1, signet threads 1) pinned to the last CPU; the load generator
# and the upstream share the others. Each proxy's CPU time per request is read from /proc;
# for signet-redis it is signet's and redis-server's together, the whole cost of the backend.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

cargo build --release --bins >&2
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

bin=$PWD/target/release
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
source scripts/lib.sh

# --- the upstream -------------------------------------------------------------------------
start_upstream 1 "$load_cpus"

# --- nginx --------------------------------------------------------------------------------
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
user root;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log $work/nginx/access.log;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    upstream model { server $upstream; keepalive 512; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
taskset -c "$proxy_cpu" nginx -p "$work/nginx" -c "$work/nginx.conf"
for _ in $(seq 100); do [[ -s "$work/nginx.pid" ]] && break; sleep 0.05; done
nginx_worker=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)

# --- signet, and signet with the Redis backend ---------------------------------------------
redis_port=$(free_port)
taskset -c "$load_cpus" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=($redis_pid)
signet_port=$(free_port)
start_signet signet "$signet_port" 1 "$proxy_cpu" "  limits:
    max_connections: 60000"
memory_signet_pid=$signet_pid
redis_signet_port=$(free_port)
redis_admin_port=$(free_port)
start_signet signet-redis "$redis_signet_port" 1 "$proxy_cpu" "  limits:
    max_connections: 60000
  admin:
    listen: \"127.0.0.1:$redis_admin_port\"
  signatures:
    backend: redis
    redis:
      url: \"redis://127.0.0.1:$redis_port/0\"
      key_prefix: \"signet:bench:\""
redis_signet_pid=$signet_pid
signet_pid=$memory_signet_pid
wait_http "127.0.0.1:$nginx_port" /_mock/stats

# --- the matrix ---------------------------------------------------------------------------
# burst: 200 events written as fast as the upstream can, one write each (proxy throughput,
#   CPU per stream);
# coalesced: the same 200 events, the upstream writing 16 KiB at a time, so a proxy reads many
#   events at once (what it sees behind a slow reader, or from a model that emits several
#   tokens per step, or speculative decoding);
# paced: 200 events 500 µs apart, as a model emits tokens (time to first byte, CPU);
# json: non-streamed completions of 200 tokens;
# encrypted: the burst stream with every request's content sealed to signet's attested x25519
#   key and every event's content sealed back to the client's (signet only; signet-load
#   --check first opens one answer and compares it with the plain one).
results="$work/results.jsonl"
: >"$results"
run_cell() { # kind concurrency requests
    local kind=$1 c=$2 requests=$3 target addr flags targets=(direct nginx signet signet-redis)
    [[ $kind == encrypted ]] && targets=(signet)
    for target in "${targets[@]}"; do
        case $target in
            direct) addr=$upstream; cpu=() ;;
            nginx) addr=127.0.0.1:$nginx_port; cpu=(--cpu-pid "$nginx_worker") ;;
            signet) addr=127.0.0.1:$signet_port; cpu=(--cpu-pid "$signet_pid") ;;
            signet-redis) addr=127.0.0.1:$redis_signet_port
                cpu=(--cpu-pid "$redis_signet_pid" --cpu-pid "$redis_pid") ;;
        esac
        case $kind in
            burst) flags=(--stream) ;;
            coalesced) flags=(--stream --write-bytes 16384) ;;
            paced) flags=(--stream --delay-us 500) ;;
            json) flags=() ;;
            encrypted) flags=(--stream --e2ee x25519 --check) ;;
        esac
        echo "… $kind c=$c $target ($requests requests)" >&2
        taskset -c "$load_cpus" "$bin/signet-load" bench --target "$addr" --label "$target" \
            --concurrency "$c" --requests "$requests" --warmup $((c * 4 > 100 ? c * 4 : 100)) \
            --events 200 "${flags[@]}" "${cpu[@]}" >>"$results"
    done
}
if [[ $quick == 1 ]]; then
    for c in 1 64; do
        run_cell burst $c 1000; run_cell encrypted $c 1000; run_cell coalesced $c 1000; run_cell json $c 1000
    done
    run_cell paced 1 100
    run_cell paced 64 640
else
    for c in 1 16 64 256; do
        run_cell burst $c $((c * 60 > 3000 ? c * 60 : 3000))
        if ((c == 1 || c == 64)); then run_cell encrypted $c $((c * 60 > 3000 ? c * 60 : 3000)); fi
        run_cell coalesced $c $((c * 60 > 3000 ? c * 60 : 3000))
        run_cell json $c $((c * 200 > 10000 ? c * 200 : 10000))
    done
    run_cell paced 1 300
    run_cell paced 16 1600
    run_cell paced 64 3200
fi

# What reached Redis: signet-redis's own counters, and the records Redis holds (each kept
# for the 5-minute TTL, so this is every signature of the run's last five minutes).
curl -fsS "http://127.0.0.1:$redis_admin_port/metrics" |
    python3 -c '
import json, re, sys
counters = {}
for line in sys.stdin:
    m = re.match(r"(signet_shared_store_\w+|signet_signed_responses_total)(\{[^}]*\})? (\S+)", line)
    if m:
        counters[m.group(1) + (m.group(2) or "")] = float(m.group(3))
print(json.dumps({"counters": counters, "redis_keys": int(sys.argv[1])}))
' "$(redis-cli -p "$redis_port" dbsize)" >"$work/redis.json"

# --- memory ---------------------------------------------------------------------------------
for target in signet nginx; do
    case $target in
        nginx) addr=127.0.0.1:$nginx_port; pid=$nginx_worker ;;
        signet) addr=127.0.0.1:$signet_port; pid=$signet_pid ;;
    esac
    echo "… 1000 open streams through $target" >&2
    taskset -c "$load_cpus" "$bin/signet-load" hold --target "$addr" --pid "$pid" \
        --streams 1000 --event-delay-ms 20000 >"$work/hold-$target.json"
done
echo "… 1,000,000 stored signatures" >&2
cargo bench --bench store_memory 2>/dev/null | grep '^{' >"$work/store.json"

mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).json
python3 bench/report.py "$results" "$work/hold-signet.json" "$work/hold-nginx.json" "$work/store.json" "$out" "$work/redis.json"
