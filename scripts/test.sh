#!/usr/bin/env bash
# Runs every check and test signet has. On a fresh machine it first installs what is missing
# (scripts/setup.sh) and, for the end-to-end tier, builds llama-server once (~12 minutes;
# cached in ~/.cache/signet-upstreams). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo deny check licenses bans sources (advisories need the network: run by hand)"
cargo deny --log-level error check licenses bans sources

echo "== cargo build"
cargo build --locked --bins

echo "== signet serve -t on every conf/*.yaml"
for conf in conf/*.yaml; do
  ./target/debug/signet serve -t -c "$conf"
done

echo "== systemd-analyze verify / security on systemd/signet.service"
./scripts/check-systemd.sh

echo "== cargo test"
cargo test --locked

echo "== end-to-end tier: a real model server (llama-server) behind signet"
./scripts/upstreams/install.sh >/dev/null
python3 -m pytest -q tests/e2e
