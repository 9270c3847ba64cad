#!/usr/bin/env bash
# The second command: install what is missing, then run every check CI runs: formatting, lints,
# unit and integration tests (real Chromium, real viewer in a real browser), and the Docker
# entrypoint test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
bash docker/test-entrypoint.sh
