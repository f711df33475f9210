#!/usr/bin/env bash
# `make smoke`: the README's commands as a newcomer types them, in this checkout (CI: its fresh clone), on tiny
# SST-2 slices (presets/smoke.yaml); each result checked. It writes where `make run` writes (outputs/, results/,
# mlflow/, .prefect/): its runs are keyed apart from the main job's, but the sst2 champion and export are its own.
#   1. the main command, SIGTERM then SIGKILL during its report step (the export); then the same command, to the end
#   2. the same command again: every step a cache hit, no export, the same champion version and archive, < 60 s;
#      bertcompress status: every step done
#   3. bertcompress predict on the shipped archive; `mlflow models serve` of models:/sst2-compressed@champion
#      answering one REST request
#   4. scripts/prefect.sh up, then at once `run sst2` (the deployment, these params), then down
#   5. dvc repro twice (the second a no-op) in a fresh clone of HEAD whose params.yaml is these params
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
BIN=$PWD/.venv/bin
PARAMS=presets/smoke.yaml
MAIN=("$BIN/python" -m flows.compress --task sst2 --params "$PARAMS")
LOGS=$(mktemp -d)
START=$SECONDS
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done; }
trap cleanup EXIT

say() { echo "smoke [$((SECONDS - START)) s]: $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
port() { "$BIN/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
main() {  # main LOG: the main command, its output in LOG; fails the smoke on a non-zero exit
  "${MAIN[@]}" >"$1" 2>&1 || { tail -40 "$1"; fail "${MAIN[*]} exited non-zero (log above)"; }
}
champion() { grep -o 'registered as models:/sst2-compressed@champion (version [0-9]*)' "$1" || true; }

# a smoke's sst2 export is its own: made afresh each time, so the interrupted run below always meets it
rm -rf results/export/sst2 results/export/sst2.tar.zst results/export/sst2.step.json
say "1. ${MAIN[*]}, interrupted in its report step"
setsid "${MAIN[@]}" >"$LOGS/killed" 2>&1 &
pid=$!
pids+=("$pid")
for _ in $(seq 600); do grep -q "report sst2: read from MLflow" "$LOGS/killed" && break; kill -0 "$pid" || break; sleep 1; done
grep -q "report sst2: read from MLflow" "$LOGS/killed" || { tail -40 "$LOGS/killed"; fail "the report step never started"; }
sleep 4  # into the champion's export (the report itself takes a second or two here)
kill -0 "$pid" 2>/dev/null || { tail -20 "$LOGS/killed"; fail "the run ended before it could be interrupted"; }
kill -TERM -- "-$pid" 2>/dev/null || true
sleep 3
kill -KILL -- "-$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
say "killed (SIGTERM, then SIGKILL); now the same command to the end"
main "$LOGS/first"
grep -q "exported: results/export/sst2.tar.zst" "$LOGS/first" || fail "the first complete run exported nothing"
first=$(champion "$LOGS/first")
[ -n "$first" ] || fail "the first complete run registered no champion"
left=$(ls -A results/export | grep -v -x -e sst2 -e sst2.tar.zst -e sst2.step.json -e 'mrpc*' || true)
[ -z "$left" ] || fail "the interrupted export left $left in results/export"
archive=$(sha256sum results/export/sst2.tar.zst)
tail -15 "$LOGS/first"

say "2. the same command again: all cache hits"
t0=$SECONDS
main "$LOGS/second"
took=$((SECONDS - t0))
ran=$(grep -o "Task run '[^']*' - Finished in state [A-Za-z]*" "$LOGS/second" | grep -v "Finished in state Cached" \
  | grep -v "report-sst2" || true)
[ -z "$ran" ] || fail "the second run redid work: $ran"
grep -q "not exported again" "$LOGS/second" || fail "the second run exported the champion again"
[ "$(champion "$LOGS/second")" = "$first" ] || fail "the second run registered another champion: $(champion "$LOGS/second")"
[ "$(sha256sum results/export/sst2.tar.zst)" = "$archive" ] || fail "the second run changed the shipped archive"
[ "$took" -lt 60 ] || fail "the second run took $took s (all cache hits: under a minute)"
say "second run: $took s, every step cached, $first"
status=$("$BIN/bertcompress" status --task sst2 --params "$PARAMS")
echo "$status" | tail -3
grep -qE "^([0-9]+) of \1 steps done, 0 will run" <<<"$status" || fail "bertcompress status: not every step done: $status"

say "3. bertcompress predict on the archive; mlflow models serve of the champion"
out=$("$BIN/bertcompress" predict --model results/export/sst2.tar.zst "a gorgeous, witty, seductive movie.")
echo "$out"
grep -q '"label_name"' <<<"$out" || fail "predict answered no label"
p=$(port)
# as the README gives it: the venv's bin first on PATH (mlflow serves with the `uvicorn` it finds there)
PATH=$BIN:$PATH MLFLOW_TRACKING_URI=sqlite:///mlflow/mlflow.db setsid mlflow models serve \
  -m models:/sst2-compressed@champion --env-manager local --host 127.0.0.1 --port "$p" >"$LOGS/serve" 2>&1 &
serve=$!
pids+=("$serve")
answer=""
for _ in $(seq 120); do
  answer=$(curl -sf -H 'Content-Type: application/json' "http://127.0.0.1:$p/invocations" \
    -d '{"dataframe_split": {"columns": ["sentence"], "data": [["a gorgeous, witty, seductive movie."]]}}') && break
  kill -0 "$serve" 2>/dev/null || { tail -20 "$LOGS/serve"; fail "mlflow models serve exited"; }
  sleep 1
done
kill -TERM -- "-$serve" 2>/dev/null || true
echo "$answer"
grep -q '"label_name"' <<<"$answer" || { tail -20 "$LOGS/serve"; fail "the served champion answered no label"; }
p=$(port)  # the MLflow UI as the README starts it: it reads this store, and finds the champion
PATH=$BIN:$PATH setsid mlflow ui --workers 1 --backend-store-uri sqlite:///mlflow/mlflow.db --host 127.0.0.1 --port "$p" \
  >"$LOGS/ui" 2>&1 &
ui=$!
pids+=("$ui")
found=""
for _ in $(seq 120); do
  found=$(curl -sf "http://127.0.0.1:$p/api/2.0/mlflow/registered-models/alias?name=sst2-compressed&alias=champion") \
    && break
  kill -0 "$ui" 2>/dev/null || { tail -20 "$LOGS/ui"; fail "mlflow ui exited"; }
  sleep 1
done
kill -TERM -- "-$ui" 2>/dev/null || true
grep -q '"version"' <<<"$found" || { tail -20 "$LOGS/ui"; fail "the MLflow UI's API does not find the champion"; }
say "mlflow ui: the champion is $(grep -o '"version": *"[0-9]*"' <<<"$found")"

say "4. scripts/prefect.sh up, then at once run sst2 (the deployment), then down"
export PREFECT_PORT
PREFECT_PORT=$(port)
scripts/prefect.sh up
if ! scripts/prefect.sh run sst2 --param "params_file=$PARAMS" >"$LOGS/deployment" 2>&1; then
  tail -30 "$LOGS/deployment"; tail -30 .prefect/serve.log; scripts/prefect.sh down; fail "the deployment run failed"
fi
scripts/prefect.sh down
grep -q "Completed" "$LOGS/deployment" || { tail -20 "$LOGS/deployment"; fail "the deployment run did not complete"; }
tail -3 "$LOGS/deployment"

say "5. dvc repro, twice, in a fresh clone of HEAD with these params as its params.yaml"
clone=$LOGS/clone/repo
mkdir -p "$LOGS/clone"
ln -s "$(cd .. && pwd)/shared" "$LOGS/clone/shared"
git clone -q . "$clone"
"$BIN/python" -c "
import sys, yaml
from bertcompress import io
from pathlib import Path
merged = io.merge(io.read_yaml(Path('params.yaml')), io.read_yaml(Path(sys.argv[1])))
Path(sys.argv[2]).write_text(yaml.safe_dump(merged, sort_keys=False))" "$PARAMS" "$clone/params.yaml"
(cd "$clone" && PATH=$BIN:$PATH dvc repro >"$LOGS/dvc1" 2>&1) || { tail -30 "$LOGS/dvc1"; fail "dvc repro failed"; }
grep -q "exported: results/export/sst2.tar.zst" "$LOGS/dvc1" || { tail -30 "$LOGS/dvc1"; fail "dvc repro shipped nothing"; }
(cd "$clone" && PATH=$BIN:$PATH dvc repro >"$LOGS/dvc2" 2>&1) || { tail -30 "$LOGS/dvc2"; fail "dvc repro (again) failed"; }
if grep -q "Running stage 'variant@\|Running stage 'sweep\|Running stage 'tokenize" "$LOGS/dvc2"; then
  fail "the second dvc repro reran a stage: $(grep "Running stage" "$LOGS/dvc2" | tr '\n' ' ')"
fi
tail -3 "$LOGS/dvc2"
rm -rf "$LOGS"
say "passed"
