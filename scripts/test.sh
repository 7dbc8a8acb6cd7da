#!/usr/bin/env bash
# Runs every check and test signet has; installs nothing. scripts/setup.sh (the README's
# first step, run once) installs what it needs; CI runs `scripts/setup.sh && scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cmake redis-server systemd-analyze node; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing: run ./scripts/setup.sh first" >&2; exit 1; }
done
cargo deny --version >/dev/null 2>&1 || { echo "test.sh: cargo-deny is missing: run ./scripts/setup.sh first" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo deny check licenses bans sources (advisories need the network: run by hand)"
cargo deny --log-level error check licenses bans sources

echo "== crate boundaries: signet-core and signet-verify never depend on Pingora, tokio or hyper"
# `cargo tree -i X -p CRATE` prints the paths from CRATE to X; an error that X matches no
# package in CRATE's graph means there is none.
depends_on() {
  local tree
  tree=$(cargo tree --locked -e normal -p "$1" -i "$2" 2>&1) && grep -q "$1 v" <<<"$tree"
}
for crate in signet-core signet-verify; do
  for banned in pingora pingora-core pingora-proxy pingora-http; do
    if depends_on "$crate" "$banned"; then
      echo "$crate depends on $banned:" >&2
      cargo tree --locked -e normal -p "$crate" -i "$banned" >&2
      exit 1
    fi
  done
done
for banned in tokio hyper; do
  if depends_on signet-core "$banned"; then
    echo "signet-core depends on $banned" >&2
    exit 1
  fi
done
# The check itself must be able to fail: the server does depend on Pingora.
depends_on signet pingora-core || { echo "boundary check is broken: signet shows no pingora-core" >&2; exit 1; }

echo "== vendor/: the patched Pingora crates are crates.io's packages plus vendor/patches, exactly"
./scripts/check-vendor.sh

echo "== cargo build"
cargo build --locked --workspace --bins
bin="${CARGO_TARGET_DIR:-target}/debug"
export SIGNET_BIN="$PWD/$bin/signet"
[[ "$bin" = /* ]] && export SIGNET_BIN="$bin/signet"

echo "== signet serve -t on every conf/*.yaml"
for conf in conf/*.yaml; do
  "$SIGNET_BIN" serve -t -c "$conf"
done

echo "== systemd-analyze verify / security on systemd/signet.service"
./scripts/check-systemd.sh

echo "== cargo test"
cargo test --locked --workspace

echo "== end-to-end tier: a real model server (llama-server) behind signet"
python3 -m pytest -q tests/e2e
