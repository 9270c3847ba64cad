#!/usr/bin/env bash
# The first command: install what is missing, build, and run the server on http://127.0.0.1:8080.
# Extra arguments go to `cobrowse serve` (e.g. scripts/serve.sh --listen 127.0.0.1:9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --release --locked -- serve "$@"
