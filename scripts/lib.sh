# Shared by bench/run.sh, bench/profile.sh and scripts/soak.sh: start the mock upstream and
# signet on free loopback ports, and wait for them. Source it after setting `work` (a
# scratch directory), `bin` (the folder holding the release binaries) and `pids` (an array:
# every process started here is added to it, for the caller's cleanup).

# The benchmarks' CPU split: the proxy under test alone on the last CPU (proxy_cpu), the load
# generator and the upstream on the others (load_cpus).
cpus=$(nproc)
proxy_cpu=$((cpus - 1))
load_cpus="0-$((cpus > 1 ? cpus - 2 : 0))"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http HOST:PORT PATH: polls until it answers 2xx, for up to 10 seconds.
wait_http() {
    for _ in $(seq 200); do
        curl -fsS -o /dev/null "http://$1$2" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "no answer from $1$2" >&2
    return 1
}

# start_upstream THREADS [taskset CPU list]: runs signet-mock-upstream on a free port; sets
# upstream (HOST:PORT) and upstream_pid.
start_upstream() {
    local threads=$1 pin=()
    [[ -n "${2:-}" ]] && pin=(taskset -c "$2")
    "${pin[@]}" "$bin/signet-mock-upstream" --listen 127.0.0.1:0 --threads "$threads" >"$work/upstream.out" 2>&1 &
    upstream_pid=$!
    pids+=("$upstream_pid")
    for _ in $(seq 200); do grep -q LISTENING "$work/upstream.out" 2>/dev/null && break; sleep 0.05; done
    upstream=$(awk '/LISTENING/ {print $2; exit}' "$work/upstream.out")
    [[ -n "$upstream" ]] || { echo "signet-mock-upstream did not start" >&2; return 1; }
}

# start_signet NAME PORT THREADS [taskset CPU list] [YAML under signet:]: runs signet on
# 127.0.0.1:PORT in front of $upstream with dev attestation, logs to $work/NAME.log, waits
# for /health; sets signet_pid.
start_signet() {
    local name=$1 port=$2 threads=$3 cpus=${4:-} extra=${5:-} pin=()
    [[ -n "$cpus" ]] && pin=(taskset -c "$cpus")
    # The configuration tests and scripts share.
    sed -e "s#@THREADS@#$threads#" -e "s#@DIR@#$work#" -e "s#@NAME@#$name#" \
        -e "s#@PORT@#$port#" -e "s#@UPSTREAM@#http://$upstream#" -e "s#@GPU@#none#" \
        conf/template.yaml.in >"$work/$name.yaml"
    printf '%s\n' "$extra" >>"$work/$name.yaml"
    "${pin[@]}" "$bin/signet" serve -c "$work/$name.yaml" 2>"$work/$name.log" &
    signet_pid=$!
    pids+=("$signet_pid")
    wait_http "127.0.0.1:$port" /health
}
