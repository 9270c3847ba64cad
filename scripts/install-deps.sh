#!/usr/bin/env bash
# Installs what cobrowse needs on a Debian machine and is not there yet: Chromium (Debian's
# `chromium` package), fonts for readable pages, a C compiler (libwebp builds from source) and
# setpriv (util-linux; kills Chromium if the server dies), nginx (tests/cluster.rs runs
# docker/nginx.conf in front of two nodes; its service is not started), Node.js and npm, and the Playwright
# harness that runs bug bundles' scripts (tests/playwright, from its package-lock.json, without
# Playwright's own browsers: it drives Debian's Chromium). Safe to run again: it installs nothing
# that is already present. The Rust toolchain itself is expected (https://rustup.rs).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

missing=()
if ! have chromium && ! have chromium-browser && ! have google-chrome-stable && ! have google-chrome \
    && [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium)
fi
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
have cc || missing+=(gcc libc6-dev)
have setpriv || missing+=(util-linux)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
have node || missing+=(nodejs)
have npm || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    have sudo || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  # nginx's package starts its service on installation (a daemon on port 80, or an error where
  # there is no init system); the tests run their own nginx. A policy-rc.d that refuses (exit
  # 101) keeps invoke-rc.d from starting anything, unless the machine has its own policy (Docker
  # images do); ours is removed afterwards.
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/install-deps.sh: no service starts while it installs packages\nexit 101\n' \
      | $sudo tee "$policy" >/dev/null
    $sudo chmod 0755 "$policy"
    own_policy=1
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then
    $sudo rm -f "$policy"
    trap - EXIT
  fi
fi

# Playwright (below) needs Node 20 or later; Debian 12's own nodejs is 18.
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "Node $(node --version) is too old for the Playwright harness: install Node 20 or later (Debian 13's nodejs, or NodeSource's)" >&2
  exit 1
fi

# The Playwright harness (tests/bundle.rs runs bundles' scripts with it): installed again when
# node_modules is missing or holds another @playwright/test than package-lock.json pins.
harness="$(cd "$(dirname "$0")/.." && pwd)/tests/playwright"
locked_version() {
  node -e 'process.stdout.write(require(process.argv[1]).packages["node_modules/@playwright/test"].version)' \
    "$harness/package-lock.json"
}
installed_version() {
  node -e 'process.stdout.write(require(process.argv[1]).version)' \
    "$harness/node_modules/@playwright/test/package.json" 2>/dev/null || true
}
if [ "$(installed_version)" != "$(locked_version)" ]; then
  echo "installing the Playwright harness (tests/playwright)" >&2
  (cd "$harness" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null)
fi

have cargo || { echo "cargo not found: install the Rust toolchain (https://rustup.rs)" >&2; exit 1; }
