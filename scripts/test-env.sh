#!/usr/bin/env bash
# Starts what the tests need and stops it on exit: a private PulseAudio server with null sinks
# (cpal's ALSA default device reaches it) and a virtual X display. Sourced by test.sh.

FALA_RUN=$(mktemp -d /tmp/fala-test.XXXXXX)

start_pulse() {
  export XDG_RUNTIME_DIR=$FALA_RUN PULSE_RUNTIME_PATH=$FALA_RUN/pulse
  cat > "$FALA_RUN/default.pa" <<PA
load-module module-native-protocol-unix auth-anonymous=1 socket=$FALA_RUN/native
load-module module-null-sink sink_name=spk rate=48000 channels=2
load-module module-null-sink sink_name=spk2 rate=48000 channels=2
load-module module-sine-source source_name=sine rate=48000 frequency=440
set-default-sink spk
set-default-source spk.monitor
PA
  HOME=$FALA_RUN pulseaudio --daemonize=yes --exit-idle-time=-1 --disallow-exit=yes \
    --use-pid-file=yes -n -F "$FALA_RUN/default.pa" --realtime=no --high-priority=no \
    --log-target=file:"$FALA_RUN/pulse.log" || { echo "PulseAudio did not start" >&2; return 1; }
  export PULSE_SERVER=unix:$FALA_RUN/native
  for _ in $(seq 50); do pactl info >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "PulseAudio is not answering" >&2
  return 1
}

start_xvfb() {
  local d
  for d in $(seq 90 120); do
    [ -e "/tmp/.X11-unix/X$d" ] || [ -e "/tmp/.X$d-lock" ] || break
  done
  Xvfb ":$d" -screen 0 1280x800x24 -nolisten tcp >"$FALA_RUN/xvfb.log" 2>&1 &
  echo $! > "$FALA_RUN/xvfb.pid"
  export DISPLAY=":$d"
  for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "Xvfb did not start" >&2
  return 1
}

stop_test_env() {
  [ -f "$FALA_RUN/pulse/pid" ] && kill "$(cat "$FALA_RUN/pulse/pid")" 2>/dev/null || true
  [ -f "$FALA_RUN/xvfb.pid" ] && kill "$(cat "$FALA_RUN/xvfb.pid")" 2>/dev/null || true
  # The sound server may still be writing its files as it dies: try again a moment later,
  # and never fail the run over a leftover temporary folder.
  rm -rf "$FALA_RUN" 2>/dev/null || { sleep 0.5; rm -rf "$FALA_RUN" 2>/dev/null; } || true
}
