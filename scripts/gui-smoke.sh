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
# Two saved contacts: Bob (who comes online) and Erin (who stays offline).
cat >"$WORK/ana/contacts.json" <<JSON
{"bob": {"name": "bob", "listed": true}, "erin": {"name": "Erin", "listed": true}}
JSON

FALA_CONFIG_DIR=$WORK/ana RUST_LOG=${FALA_LOG:-fala=info} "$FALA_BIN" 2>"$WORK/ana.log" &
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
# There is no window manager: the window sits at (0,0) and keys reach it only once focused.
xdotool windowfocus --sync "$WIN"
click() { xdotool mousemove --sync "$1" "$2" click 1; sleep 0.4; }
key() { xdotool windowfocus --sync "$WIN" key "$1"; sleep 0.3; }
snap() { sleep 0.6; import -window "$WIN" "$OUT/$1.png"; echo "wrote $OUT/$1.png ($(colours "$OUT/$1.png") colours)"; }
# Where the buttons are in the 780x560 window (checked on the screenshots themselves).
REGISTER=(232 241)
START_LOCAL=(238 380)
TAB_SETTINGS=(233 16)

# Connect: no server yet, so the window offers to start one inside itself.
click "${REGISTER[@]}"
sleep 1
snap connect
click "${START_LOCAL[@]}"
sleep 1

# Headless peers: `fala term`, each reading its commands from a FIFO held open here.
peer() {
    local name=$1 fd
    mkfifo "$WORK/$name.in"
    mkdir -p "$WORK/$name"
    FALA_CONFIG_DIR="$WORK/$name" "$FALA_BIN" term --name "$name" --server "$SERVER" <"$WORK/$name.in" >"$WORK/$name.out" 2>&1 &
    GUI_CLEANUP+=("kill $!")
    eval "PID_$name=$!"
    exec {fd}>"$WORK/$name.in"
    eval "FD_$name=$fd"
}
say() { local fd="FD_$1"; echo "$2" >&"${!fd}"; sleep 0.4; }
wait_out() { for t in $(seq 1 ${3:-50}); do grep -q "$2" "$WORK/$1.out" && return 0; sleep 0.1; done; return 1; }
peer bob
peer carol
peer dora
wait_out dora "Press 0"
# Carol calls Dora, who answers: both show as "in a call" in Ana's list.
say carol 1; say carol dora; say carol y
wait_out dora "Accept?"; say dora y
# They registered after Ana's first page of "Find people": the page is asked again when it
# is 10 s old and the window draws a frame (here: the pointer moves).
sleep 10
xdotool mousemove --sync 600 500
sleep 1
snap main

# Bob calls Ana: the incoming-call dialog.
say bob 1; say bob ana; say bob y
wait_out bob "Ringing"
snap incoming

# Y accepts; the in-call screen (with the engine-not-connected note until audio is wired).
key y
wait_out bob "connected" 200 || { echo "FAIL: the call did not connect" >&2; cat "$WORK/bob.out" "$WORK/ana.log" >&2; exit 1; }
sleep 2.2
snap in-call
# Bob's process freezes (as a peer whose network drops everything would look): after 3 s
# without anything from him the window says so.
kill -STOP "$PID_bob"
sleep 4
snap in-call-no-audio
kill -CONT "$PID_bob"
sleep 1
key Escape
sleep 0.5
click "${TAB_SETTINGS[@]}"
snap settings
