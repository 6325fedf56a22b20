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

# Python for the protocol interop test (msgpack, cryptography for Ed25519) and the
# voice-quality bench (pesq, pystoi).
if [ ! -x target/py-venv/bin/python ]; then
  python3 -m venv target/py-venv
fi
target/py-venv/bin/python -c "import msgpack, cryptography" 2>/dev/null ||
  target/py-venv/bin/pip install -q msgpack cryptography
export FALA_PYTHON=$PWD/target/py-venv/bin/python

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== fuzz targets still build (running them needs nightly: see README)"
cargo check --quiet --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-check

echo "== tests"
# The NAT lab runs the real fala-server binary, which no test target of its own package builds.
cargo build --quiet --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

if [ -x scripts/gui-smoke.sh ]; then
  echo "== window smoke test"
  cargo build --quiet --bin fala
  FALA_BIN=target/debug/fala scripts/gui-smoke.sh
fi
