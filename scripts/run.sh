#!/usr/bin/env bash
# Builds Fala (release) and runs it. With no arguments it opens the window; any arguments go
# to the `fala` program (e.g. `scripts/run.sh term --name ana`). `scripts/run.sh server`
# runs the signaling server instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_rust
cargo build --release --quiet --bin fala --bin fala-server -p fala -p fala-server
if [ "${1:-}" = "server" ]; then
  shift
  exec ./target/release/fala-server "$@"
fi
exec ./target/release/fala "$@"
