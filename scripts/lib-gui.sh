# Shared helpers for the window scripts (sourced by gui-smoke.sh and gui-bench.sh).
# Needs: Xvfb, xdpyinfo (x11-utils), xdotool, ImageMagick (import, identify).

# Cleanup runs every registered command, newest first, on exit.
GUI_CLEANUP=()
gui_cleanup() {
    local i
    for ((i = ${#GUI_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${GUI_CLEANUP[$i]}" >/dev/null 2>&1 || true
    done
}
trap gui_cleanup EXIT

need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "missing $tool (apt-get install -y xvfb x11-utils xdotool imagemagick)" >&2
            exit 2
        }
    done
}

# Starts Xvfb on the first free display number and exports DISPLAY (never reuses a running
# one, so the scripts work whether or not another X server is up).
start_xvfb() {
    local n
    for n in $(seq 90 140); do
        if [ ! -e "/tmp/.X11-unix/X$n" ] && [ ! -e "/tmp/.X$n-lock" ]; then
            Xvfb ":$n" -screen 0 1024x768x24 -nolisten tcp >/dev/null 2>&1 &
            local pid=$!
            GUI_CLEANUP+=("kill $pid")
            export DISPLAY=":$n"
            local t
            for t in $(seq 1 100); do
                xdpyinfo >/dev/null 2>&1 && return 0
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
            echo "Xvfb :$n did not start" >&2
            return 1
        fi
    done
    echo "no free X display number" >&2
    return 1
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (up to $1 s) for a window named exactly Fala; prints its id.
wait_window() {
    local limit=$1 t id
    for t in $(seq 1 $((limit * 20))); do
        id=$(xdotool search --name '^Fala$' 2>/dev/null | head -1)
        if [ -n "$id" ]; then
            echo "$id"
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# Unique colours in a PNG: a window that never rendered is one flat colour.
colours() {
    identify -format '%k' "$1" 2>/dev/null || echo 0
}

# Takes screenshots of the root window until one has more than $2 colours (up to $3 s).
shot_until_rendered() {
    local out=$1 min=$2 limit=$3 t
    for t in $(seq 1 $((limit * 5))); do
        import -window root "$out" 2>/dev/null || true
        if [ "$(colours "$out")" -gt "$min" ]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}
