#!/usr/bin/env bash
# Runs every check and test webconf has, browser tests included, on a fresh
# Debian machine: installs Chromium and chromedriver when missing, then
# formatting, lints, the web client's type check, and `cargo test`.
#
# Browser tests put themselves in a loopback-only network namespace (see
# crates/webconf/tests/it/harness.rs); that needs root or user namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

step "system packages"
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v unshare >/dev/null || missing+=(util-linux)
command -v ip >/dev/null || missing+=(iproute2)
# coturn's TURN client and echo peer test the built-in TURN server.
command -v turnutils_uclient >/dev/null || missing+=(coturn)
# nft breaks the network path inside a test's private namespace (ICE restart).
command -v nft >/dev/null || missing+=(nftables)
# docs/tokens.md's shell recipe is run by the tests.
command -v openssl >/dev/null || missing+=(openssl)
# A Korean font, so screenshots of the Korean UI can be read.
[ -d /usr/share/fonts/truetype/nanum ] || missing+=(fonts-nanum)
# Firefox ESR joins the group calls of the browser tests.
command -v firefox-esr >/dev/null || missing+=(firefox-esr)
# The cluster tests start their own redis-server (and use redis-cli).
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
# The load balancer configs of docs/deploy.md run in front of the cluster
# tests' nodes (not as services: the tests start their own, from /usr/sbin).
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
chromium --version
chromedriver --version
firefox-esr --version
redis-server --version
/usr/sbin/haproxy -v | sed -n 1p
/usr/sbin/nginx -v
# Firefox's WebDriver, from crates.io (pinned; works with ESR 153).
GECKODRIVER_VERSION=0.37.1
# Whole outputs read (sed, grep without -q): a reader that stops early
# makes geckodriver panic on the broken pipe, failing the pipeline.
if ! "${CARGO_HOME:-$HOME/.cargo}/bin/geckodriver" --version 2>/dev/null | grep "$GECKODRIVER_VERSION" >/dev/null; then
  step "geckodriver $GECKODRIVER_VERSION (cargo install)"
  cargo install geckodriver --version "$GECKODRIVER_VERSION" --locked --quiet
fi
"${CARGO_HOME:-$HOME/.cargo}/bin/geckodriver" --version | sed -n 1p

step "cargo fmt"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "web client type check (tsc --checkJs, no build step)"
scripts/check-js.sh

step "cargo test"
cargo test --workspace --locked

step "fuzzing every parser of peer input (${FUZZ_SECONDS:-20} s each)"
scripts/fuzz.sh

step "all tests passed"
