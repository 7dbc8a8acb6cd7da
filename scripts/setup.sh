#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test signet. Idempotent: a second
# run only checks. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)      # pingora-core -> libz-ng-sys
command -v cc >/dev/null || need_apt+=(build-essential)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python packages the tests use as independent implementations (eth-account recovers
# signatures without signet's code).
if ! python3 -c "import eth_account" 2>/dev/null; then
  echo "setup: installing Python test packages"
  python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt
fi
