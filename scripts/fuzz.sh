#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 300) and prints the executions
# each one ran. Needs cargo-fuzz (`cargo install cargo-fuzz`); the sanitizer build needs
# nightly features, which RUSTC_BOOTSTRAP=1 enables on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# A crash stops its target and leaves the input in fuzz/artifacts/TARGET/; once fixed, copy
# it to fuzz/regressions/TARGET/ so `cargo test` (tests/fuzz_regressions.rs) replays it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-300}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(sse_id request_body config wire_ids)
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build -O >&2
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    # Seed each corpus with the regression inputs and, for the scanner, the seed vectors.
    cp regressions/"$target"/* "corpus/$target/" 2>/dev/null || true
    log=$(mktemp)
    if cargo fuzz run -O "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        result=clean
    else
        result="FAILED (see fuzz/artifacts/$target/)"
        status=1
        grep -m1 -A4 "panicked\|ERROR:" "$log" >&2 || true
    fi
    runs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)
    corpus=$(ls "corpus/$target" | wc -l)
    printf '%-13s %s executions in %ss, corpus %s inputs: %s\n' \
        "$target" "${runs:-?}" "$seconds" "$corpus" "$result"
    rm -f "$log"
done
exit $status
