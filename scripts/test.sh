#!/usr/bin/env bash
# Runs every Fala test: installs what is missing, starts a private sound server and a virtual
# display, then runs the unit and integration tests and the window smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
ensure_rust
source scripts/test-env.sh
trap stop_test_env EXIT
start_pulse
start_xvfb

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

if [ -x scripts/gui-smoke.sh ]; then
  echo "== window smoke test"
  cargo build --quiet --bin fala
  scripts/gui-smoke.sh target/debug/fala
fi
