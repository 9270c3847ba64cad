#!/bin/bash
# Baseline: Xvfb + x11vnc + noVNC (websockify), measured at a real noVNC viewer.
# Usage: benches/novnc/run.sh            (root; installs missing Debian packages)
# Env:   BENCH_SECONDS (idle/animation window, default 5), BENCH_CLICKS (default 30)
# Prints the results as JSON on stdout and writes benches/novnc/results.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${BENCH_OUT:-$HERE/results.json}"
CHROMIUM_BIN=/usr/lib/chromium/chromium      # the binary behind the /usr/bin/chromium wrapper
CHROMIUM_FLAGS=(--no-sandbox --disable-background-networking --disable-component-update
  --disable-sync --no-first-run --disable-quic --no-default-browser-check
  --remote-allow-origins=* --password-store=basic)

say() { echo "[run.sh] $*" >&2; }

# --- packages --------------------------------------------------------------------------
need=()
for p in xvfb x11vnc novnc websockify python3-websockets xdotool chromium; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2; then
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2
  fi
fi
[ -x "$CHROMIUM_BIN" ] || CHROMIUM_BIN=/usr/bin/chromium

# --- process bookkeeping ---------------------------------------------------------------
TMP="$(mktemp -d /tmp/novnc-bench.XXXXXX)"
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  if ((rc)); then say "failed (rc=$rc); logs kept in $TMP"; else rm -rf "$TMP"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in its own process group (session), logs to $TMP/NAME.log
start() {
  local name=$1; shift
  setsid "$@" >"$TMP/$name.log" 2>&1 < /dev/null &
  PIDS+=($!)
  say "started $name (pid $!)"
}
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {  # wait_port PORT NAME
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  say "$2 did not open port $1"; return 1
}

HTTP_PORT=$(free_port); VNC_PORT=$(free_port); WS_PORT=$(free_port)
SESSION_CDP=$(free_port); VIEWER_CDP=$(free_port)

# --- the stack ---------------------------------------------------------------------------
start http /usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$HERE/pages" "$HTTP_PORT"

# Xvfb picks a free display number and writes it to fd 3.
start xvfb sh -c "exec Xvfb -displayfd 3 -screen 0 1280x720x24 -nolisten tcp 3>'$TMP/display'"
for _ in $(seq 1 100); do [ -s "$TMP/display" ] && break; sleep 0.1; done
[ -s "$TMP/display" ] || { say "Xvfb did not start"; cat "$TMP/xvfb.log" >&2; exit 1; }
DISPLAY_NUM=":$(tr -d '[:space:]' < "$TMP/display")"
say "Xvfb on $DISPLAY_NUM"

start session env DISPLAY="$DISPLAY_NUM" "$CHROMIUM_BIN" "${CHROMIUM_FLAGS[@]}" \
  --user-data-dir="$TMP/session-profile" --remote-debugging-port="$SESSION_CDP" \
  --window-size=1280,720 --window-position=0,0 --kiosk \
  "http://127.0.0.1:$HTTP_PORT/text.html"
wait_port "$SESSION_CDP" "session chromium"
# Without a window manager Chromium keeps its window 1px short of the screen (1279x719, even
# in kiosk mode); resize it from outside so the page really gets 1280x720.
for _ in $(seq 1 50); do
  WINS=$(DISPLAY="$DISPLAY_NUM" xdotool search --class Chromium-browser 2>/dev/null || true)
  [ -n "$WINS" ] && break; sleep 0.1
done
for w in $WINS; do DISPLAY="$DISPLAY_NUM" xdotool windowsize "$w" 1280 720 || true; done

# x11vnc with its default polling/encoding settings.
start x11vnc x11vnc -display "$DISPLAY_NUM" -rfbport "$VNC_PORT" -shared -forever -nopw -localhost
wait_port "$VNC_PORT" x11vnc

start websockify websockify --web /usr/share/novnc "127.0.0.1:$WS_PORT" "127.0.0.1:$VNC_PORT"
wait_port "$WS_PORT" websockify

start viewer "$CHROMIUM_BIN" "${CHROMIUM_FLAGS[@]}" --headless=new \
  --user-data-dir="$TMP/viewer-profile" --remote-debugging-port="$VIEWER_CDP" \
  --window-size=1400,900 about:blank
wait_port "$VIEWER_CDP" "viewer chromium"

# --- measure -------------------------------------------------------------------------------
# In the background + wait, so that a signal to this script runs the cleanup at once.
# Progress goes to stderr as it happens; the JSON is printed once the run succeeded.
setsid /usr/bin/python3 "$HERE/measure.py" "$SESSION_CDP" "$VIEWER_CDP" "$HTTP_PORT" "$WS_PORT" "$OUT" \
  >"$TMP/measure.out" </dev/null &
PIDS+=($!)
rc=0; wait $! || rc=$?
((rc == 0)) && cat "$TMP/measure.out"
exit $rc
