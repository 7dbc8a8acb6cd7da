#!/usr/bin/env bash
# Checks that each patched Pingora crate in vendor/ is exactly the crates.io package plus the
# patches vendor/README.md lists, applied in order: nothing changed by hand, and every change
# recorded as a diff that re-applies to a fresh package. The packages are cargo's cached
# downloads or fetched from crates.io, and checked against crates.io's published checksums.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cache=${CARGO_HOME:-$HOME/.cargo}/registry/cache
check() {
  local crate=$1 version=$2 sha256=$3 && shift 3
  local file="$work/$crate-$version.crate" cached
  cached=$(find "$cache" -maxdepth 2 -name "$crate-$version.crate" 2>/dev/null | head -1) || true
  if [[ -n "$cached" ]]; then
    cp "$cached" "$file"
  else
    curl -sSfL -o "$file" "https://static.crates.io/crates/$crate/$crate-$version.crate"
  fi
  echo "$sha256  $file" | sha256sum -c --quiet - \
    || { echo "check-vendor: $crate $version does not have crates.io's checksum" >&2; exit 1; }
  tar -xzf "$file" -C "$work"
  for diff in "$@"; do
    patch -s -p1 -d "$work/$crate-$version" <"vendor/patches/$diff" \
      || { echo "check-vendor: $diff does not apply to $crate $version" >&2; exit 1; }
  done
  diff -r "$work/$crate-$version" "vendor/$crate" >&2 \
    || { echo "check-vendor: vendor/$crate is not $crate $version plus $*" >&2; exit 1; }
  echo "vendor/$crate = $crate $version + $*"
}
# Checksums: the "cksum" of each version in crates.io's index (index.crates.io/pi/ng/<crate>).
check pingora-core 0.9.1 a535f47f65fdcb003f9e1df04cd18e614c128dfe9388acce3f211ae38ac14d68 \
  pingora-core.diff pingora-core-body-buffer.diff pingora-core-merge-chunks.diff \
  pingora-core-smaller-futures.diff pingora-core-response-head.diff \
  pingora-core-request-body-buffer.diff pingora-core-release-idle-body-buffer.diff \
  pingora-core-request-head.diff
check pingora-proxy 0.9.1 8e3d5670490740405ecc8c6f75c3fcbce4d24f7adaffb355ca44550e7918e358 \
  pingora-proxy.diff pingora-proxy-response-batch.diff pingora-proxy-smaller-futures.diff \
  pingora-proxy-session-once.diff pingora-proxy-request-future.diff
