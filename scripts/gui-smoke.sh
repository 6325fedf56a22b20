#!/usr/bin/env bash
# Smoke test of the real window: starts `fala` under a private Xvfb, waits for the window,
# screenshots it and fails if it did not render (a flat image).
#
#   scripts/gui-smoke.sh                 # smoke test only
#   scripts/gui-smoke.sh --screenshots   # also drive the main screens into docs/screenshots/
#
# FALA_BIN picks the binary (default: build it with cargo into $CARGO_TARGET_DIR or target/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-gui.sh
need Xvfb xdpyinfo xdotool import identify python3

SHOTS=0
[ "${1:-}" = "--screenshots" ] && SHOTS=1
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${FALA_BIN:-}" ]; then
    cargo build --bin fala >&2
    FALA_BIN=$TARGET/debug/fala
fi

WORK=$(mktemp -d)
GUI_CLEANUP+=("rm -rf $WORK")
start_xvfb
PORT=$(free_port)
SERVER=127.0.0.1:$PORT
mkdir -p "$WORK/ana"
cat >"$WORK/ana/settings.json" <<JSON
{"name": "ana", "server": "$SERVER"}
JSON

FALA_CONFIG_DIR=$WORK/ana RUST_LOG=fala=info "$FALA_BIN" 2>"$WORK/ana.log" &
APP=$!
GUI_CLEANUP+=("kill $APP")
WIN=$(wait_window 30) || { echo "FAIL: no window named Fala within 30 s" >&2; cat "$WORK/ana.log" >&2; exit 1; }
if ! shot_until_rendered "$WORK/first.png" 50 20; then
    echo "FAIL: the window did not render (only $(colours "$WORK/first.png") colours)" >&2
    exit 1
fi
echo "ok: window $WIN rendered with $(colours "$WORK/first.png") colours"
[ "$SHOTS" = 1 ] || exit 0

# ---- README screenshots: connect, main with users, incoming call, in a call, settings ----
OUT=docs/screenshots
mkdir -p "$OUT"
click() { xdotool mousemove --sync "$1" "$2" click 1; sleep 0.4; }
snap() { sleep 0.5; import -window "$WIN" "$OUT/$1.png"; echo "wrote $OUT/$1.png"; }
# Positions of the buttons in the 780x560 window (no window manager: it sits at 0,0).
REGISTER=(56 224)
START_LOCAL=(98 366)
TAB_SETTINGS=(246 22)

# Connect: no server yet, so the window offers to start one inside itself.
click "${REGISTER[@]}"
sleep 1
snap connect
click "${START_LOCAL[@]}"
for t in $(seq 1 50); do grep -q "registered\|Registered" "$WORK/ana.log" 2>/dev/null && break; sleep 0.1; done

# Headless peers: `fala term` reading commands from a FIFO each.
peer() {
    local name=$1
    mkfifo "$WORK/$name.in"
    "$FALA_BIN" term --name "$name" --server "$SERVER" <"$WORK/$name.in" >"$WORK/$name.out" 2>&1 &
    GUI_CLEANUP+=("kill $!")
    exec {fd}>"$WORK/$name.in"
    eval "FD_$name=$fd"
}
peer bob
peer carol
peer dora
sleep 1.5
snap main

# Bob calls Ana: the incoming-call dialog.
echo 1 >&"$FD_bob"; sleep 0.3
echo ana >&"$FD_bob"; sleep 0.5
echo y >&"$FD_bob"; sleep 1
snap incoming

# Y accepts; the in-call screen (with the engine-not-connected note until audio is wired).
xdotool key y
sleep 2.5
snap in-call
xdotool key Escape
sleep 0.8
click "${TAB_SETTINGS[@]}"
snap settings
