#!/usr/bin/env bash
# A local Prefect server on 127.0.0.1 with its SQLite database in .prefect/ (git-ignored), the deployments
# compress/mrpc, compress/sst2, compress/cola served against it, and runs of them.
#
#   scripts/prefect.sh up                 # start server + deployments in the background (logs in .prefect/)
#   scripts/prefect.sh run mrpc [--param 'overrides=["finetune.epochs=1"]']   # run compress/mrpc and watch it
#   scripts/prefect.sh down               # stop what `up` started
#   scripts/prefect.sh server | serve     # either one in the foreground
# The UI is at http://127.0.0.1:${PREFECT_PORT:-4200}.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PREFECT_PORT:-4200}
BIN=${BIN:-$PWD/.venv/bin}
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
mkdir -p "$PREFECT_HOME"

wait_up() {  # until the server answers its health check
  for _ in $(seq 120); do
    "$BIN/python" -c "import urllib.request as u; u.urlopen('$PREFECT_API_URL/health', timeout=2)" 2>/dev/null \
      && return 0
    sleep 1
  done
  echo "error: no Prefect server on $PREFECT_API_URL after 120 s; see $PREFECT_HOME/server.log" >&2
  return 1
}

wait_served() {  # until every deployment answers: `run` right after `up` finds it (they register ~2 s after start)
  local names
  names=$("$BIN/python" -c "from flows.serve import TASKS; print(' '.join(TASKS))")
  for _ in $(seq 120); do
    "$BIN/python" -c "
import sys, urllib.request as u
for t in sys.argv[1:]:
    u.urlopen('$PREFECT_API_URL/deployments/name/compress/' + t, timeout=2)" $names 2>/dev/null && return 0
    kill -0 "$(cat "$PREFECT_HOME/serve.pid")" 2>/dev/null \
      || { echo "error: the deployments' process exited; see $PREFECT_HOME/serve.log" >&2; return 1; }
    sleep 1
  done
  echo "error: deployments not registered on $PREFECT_API_URL after 120 s; see $PREFECT_HOME/serve.log" >&2
  return 1
}

start() {  # start NAME CMD...: in the background, in its own process group, pid in .prefect/NAME.pid
  local name=$1; shift
  setsid "$@" >"$PREFECT_HOME/$name.log" 2>&1 &
  echo $! >"$PREFECT_HOME/$name.pid"
}

stop() {  # SIGTERM to the process group, SIGKILL if it is still there after 20 s
  local pidfile=$PREFECT_HOME/$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case ${1:-} in
  server) exec "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" ;;
  serve)  exec "$BIN/python" -m flows.serve ;;
  up)
    start server "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT"
    wait_up
    start serve "$BIN/python" -m flows.serve
    wait_served
    echo "server: http://127.0.0.1:$PORT (pid $(cat "$PREFECT_HOME/server.pid")), deployments served (pid $(cat "$PREFECT_HOME/serve.pid"))"
    echo "next: scripts/prefect.sh run mrpc   (or PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run compress/mrpc)" ;;
  run)
    task=${2:?usage: scripts/prefect.sh run TASK [--param key=value ...]}; shift 2
    "$BIN/python" -c "import urllib.request as u; u.urlopen('$PREFECT_API_URL/health', timeout=5)" 2>/dev/null \
      || { echo "error: no Prefect server on $PREFECT_API_URL; start it with: scripts/prefect.sh up" >&2; exit 1; }
    exec "$BIN/prefect" deployment run "compress/$task" --watch "$@" ;;
  down) stop serve; stop server ;;  # serve first: it says goodbye to the server
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
