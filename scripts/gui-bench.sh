#!/usr/bin/env bash
# Measures the window: time to first frame, CPU and memory idle and in a call.
# Prints a Markdown table (docs/BENCHMARKS-gui.md keeps the last numbers).
#
#   scripts/gui-bench.sh            # release build (set FALA_BIN / FALA_SERVER_BIN to skip it)
#   SECONDS_PER_SAMPLE=10 (default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-gui.sh
need Xvfb xdpyinfo xdotool import identify python3

SAMPLE=${SECONDS_PER_SAMPLE:-10}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${FALA_BIN:-}" ]; then
    cargo build --release --bin fala >&2
    cargo build --release -p fala-server --bin fala-server >&2
    FALA_BIN=$TARGET/release/fala
    FALA_SERVER_BIN=$TARGET/release/fala-server
fi
FALA_SERVER_BIN=${FALA_SERVER_BIN:-$(dirname "$FALA_BIN")/fala-server}

WORK=$(mktemp -d)
GUI_CLEANUP+=("rm -rf $WORK")
start_xvfb
PORT=$(free_port)
SERVER=127.0.0.1:$PORT
"$FALA_SERVER_BIN" --listen "$SERVER" --data-dir "$WORK/server" >"$WORK/server.log" 2>&1 &
GUI_CLEANUP+=("kill $!")
for t in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done

mkdir -p "$WORK/ana"
echo "{\"name\": \"ana\", \"server\": \"$SERVER\"}" >"$WORK/ana/settings.json"

# CPU ticks (user + system) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# Private memory only (heap, stacks): without the shared libraries' file pages, of which
# Mesa's software renderer (libLLVM) is most of the total under Xvfb.
anon_mb() { awk '/RssAnon/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)
# CPU % of one core over SAMPLE seconds.
cpu_pct() {
    local pid=$1 a b
    a=$(ticks "$pid")
    sleep "$SAMPLE"
    b=$(ticks "$pid")
    python3 -c "print(f'{($b - $a) / $HZ / $SAMPLE * 100:.2f}')"
}

START=$(date +%s%N)
FALA_CONFIG_DIR=$WORK/ana RUST_LOG=fala=info "$FALA_BIN" --connect 2>"$WORK/ana.log" &
APP=$!
GUI_CLEANUP+=("kill $APP")
WIN=$(wait_window 30) || { echo "no window" >&2; cat "$WORK/ana.log" >&2; exit 1; }
shot_until_rendered "$WORK/first.png" 50 20 || { echo "window did not render" >&2; exit 1; }
VISIBLE_MS=$(( ($(date +%s%N) - START) / 1000000 ))
FIRST_MS=$(sed -n 's/.*first frame drawn \([0-9]*\) ms.*/\1/p' "$WORK/ana.log" | head -1)

sleep 2  # let registration and the first presence list settle
IDLE_CPU=$(cpu_pct "$APP")
IDLE_RSS=$(rss_mb "$APP")
IDLE_ANON=$(anon_mb "$APP")

# A call: Bob (a terminal client) calls Ana, Y accepts in the window.
mkfifo "$WORK/bob.in"
mkdir -p "$WORK/bob"
FALA_CONFIG_DIR="$WORK/bob" "$FALA_BIN" term --name bob --server "$SERVER" <"$WORK/bob.in" >"$WORK/bob.out" 2>&1 &
GUI_CLEANUP+=("kill $!")
exec 7>"$WORK/bob.in"
sleep 1
echo 1 >&7; sleep 0.3; echo ana >&7; sleep 0.3; echo y >&7
for t in $(seq 1 50); do grep -q "Ringing" "$WORK/bob.out" && break; sleep 0.1; done
sleep 0.5
xdotool windowfocus --sync "$WIN" key y  # no window manager: focus it first
for t in $(seq 1 50); do grep -q "connected" "$WORK/bob.out" && break; sleep 0.1; done
sleep 1
CALL_CPU=$(cpu_pct "$APP")
CALL_RSS=$(rss_mb "$APP")
CALL_ANON=$(anon_mb "$APP")
grep -q "connected" "$WORK/bob.out" || echo "warning: the call did not connect" >&2

echo "| measure | value | target |"
echo "| --- | --- | --- |"
echo "| first frame drawn (from process start, logged by the app) | ${FIRST_MS:-?} ms | |"
echo "| window visible and rendered (first non-flat screenshot) | ${VISIBLE_MS} ms | |"
echo "| CPU idle, registered, ${SAMPLE} s | ${IDLE_CPU} % of a core | ≤ 1 % |"
echo "| RSS idle (total / private) | ${IDLE_RSS} MB / ${IDLE_ANON} MB | ≤ 80 MB |"
echo "| CPU in a call (audio engine running on the default devices; window repainting every 100 ms for the meters), ${SAMPLE} s | ${CALL_CPU} % of a core | |"
echo "| RSS in a call (total / private) | ${CALL_RSS} MB / ${CALL_ANON} MB | |"
