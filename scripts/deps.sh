#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Fala needs to build, run and test, when they are missing.
# Sourced by run.sh and test.sh. Usage: ensure_packages pkg...
set -euo pipefail

# Needed to build (opus is built from source with cmake; cpal needs ALSA headers; the window
# needs Wayland/xkbcommon headers) and to run the window under X11 with Mesa's software GL.
BUILD_PACKAGES=(build-essential pkg-config cmake libasound2-dev libwayland-dev libxkbcommon-dev
  libxkbcommon-x11-0 libgl1-mesa-dri libegl-mesa0 libegl1 libgl1 libasound2-plugins)
# Needed only by the tests: a private sound server, a virtual display, speech and WAV tools.
TEST_PACKAGES=(pulseaudio pulseaudio-utils sox espeak-ng xvfb xauth imagemagick x11-utils xdotool
  python3-venv iproute2 nftables)

ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "Installing missing packages: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The oldest Rust that builds Fala (Cargo.toml's rust-version).
RUST_MIN=1.95

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "Rust is missing: install it with rustup (https://rustup.rs), version $RUST_MIN or newer." >&2
    exit 1
  fi
  # Fail now with one line rather than after minutes of compiling.
  local have
  have=$(rustc --version 2>/dev/null | awk '{print $2}')
  if ! printf '%s\n%s\n' "$RUST_MIN" "${have%%-*}" | sort -V -C; then
    echo "Rust $have is too old: Fala needs $RUST_MIN or newer (run: rustup update stable)." >&2
    exit 1
  fi
}
