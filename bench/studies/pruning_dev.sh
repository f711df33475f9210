#!/usr/bin/env bash
# Issue 29's pruning study on one lent GPU: recipes chosen on the dev split (seeds 42-44), the chosen ones reported
# on validation with fresh seeds (45-49). Run from the repository root with .carry/ (../shared/tools/make_gpu_carry.py);
# then here: python -m bench.studies.pruning_report --dev bench/results/pruning-study-dev.json <the calls' JSON files>
#     bash bench/studies/pruning_dev.sh choose $OUT      # call 1
#     bash bench/studies/pruning_dev.sh report $OUT      # call 2 (the recipes chosen from call 1's rows)
#     bash bench/studies/pruning_dev.sh final $OUT       # what was run instead of call 2 (see the final branch)
#     bash bench/studies/pruning_dev.sh final2 $OUT      # a later session's one call (see the final2 branch)
#     bash bench/studies/pruning_dev.sh final3 $OUT      # its second: SST-2's structured choice on dev
#     bash bench/studies/pruning_dev.sh final4 $OUT      # RTE dense on dev, longer schedules (not run yet: no machine)
set -euo pipefail
role=$1 out=$2 jobs=${JOBS:-14} limit=${LIMIT:-560}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
S=42,43,44
choose=(  # in priority order: SST-2 first (its dense is the long pole), the cheap MRPC and RTE runs fill the GPU
  sst2:$S:structured@4:0.5/0.625,0.67/0.75:kd:hidden_weight=0
  sst2:$S:first_order:0.9:kd
  sst2:$S:structured@4:0.5/0.625,0.67/0.75:kd:hidden_weight=1
  sst2:$S:structured@4:0.67/0.75:kd:hidden_weight=0,structured_epochs=4
  mrpc:$S:first_order:0.9:kd
  mrpc:$S:first_order:0.9:kd:hidden_weight=0
  mrpc:$S:structured@4:0.5/0.625,0.67/0.75:kd:hidden_weight=0
  mrpc:$S:structured@4:0.5/0.625,0.67/0.75:kd:hidden_weight=1
  mrpc:$S:structured@4:0.67/0.75:kd:hidden_weight=0,structured_epochs=20
  mrpc:$S:first_order:0.9:kd:epochs=30
  mrpc:$S:first_order:0.8:kd
  rte:$S:dense:-:none:dense_lr=2e-5
  rte:$S:dense:-:none:dense_lr=5e-5
  rte:$S:dense:-:none:dense_lr=2e-5,dense_epochs=10
  rte:$S:dense:-:none:dense_lr=5e-5,dense_epochs=10
  rte:$S:dense:-:none:dense_lr=1e-4,dense_epochs=10
)
# report: the recipes the choose call's rows choose (pruning_study.py specs; the structured shapes' speed-ups at
# batch 8 as timed on the CPU here, bench/studies/pruning_report.py cpu_speed), on fresh seeds; the choose JSON from
# the warm machine's /dev/shm, else .study/choose.json in the working tree
speed=${SPEED:-0.5/0.625=2.27,0.67/0.75=3.24}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if ! python3 -c "import zstandard" 2>/dev/null; then  # bertcompress.sizes needs it for compressed_mb (not used here)
  mkdir -p /tmp/zstd-stand-in
  printf '%s\n' '"""Stand-in where zstandard is missing: compressed sizes read 0 (the study uses none)."""' \
    'class ZstdCompressor:' '    def __init__(self, level=3): pass' '    def compress(self, data): return b""' \
    >/tmp/zstd-stand-in/zstandard.py
  export PYTHONPATH=/tmp/zstd-stand-in
fi
study() { python3 -m bench.studies.pruning_study "$@"; }
choose_beside_report() {  # TAG CHOOSE_JOBS REPORT_JOBS LINES: the specs in C (--role choose, own root) and in R
  # (--role report) in one call side by side; then each log's last LINES lines
  STUDY_ROOT=/dev/shm/pruning-choose timeout "$limit" python3 -m bench.studies.pruning_study run --role choose \
    --jobs "$2" "${C[@]}" --json "$out/choose$1.json" >"$out/choose$1.log" 2>&1 || echo "choose$1 exited $?" &
  timeout "$limit" python3 -m bench.studies.pruning_study run --role report --jobs "$3" "${R[@]}" \
    --json "$out/report$1.json" >"$out/report$1.log" 2>&1 || echo "report$1 exited $?"
  wait
  for f in "choose$1" "report$1"; do grep -v '^epoch=' "$out/$f.log" | grep -v Warn | tail -n "$4"; done
}
if [ "$role" = final ]; then
  # the one call the device time left allowed after call 1 (choose) lost its structured runs: three studies at
  # once on the one GPU. B reports what call 1 chose (MRPC first-order 90 % recipe, RTE dense recipe) and, for
  # SST-2, dense and one structured recipe fixed beforehand (no SST-2 choice ran); A chooses MRPC's structured recipe
  # on dev; C then reports A's choice on MRPC and RTE, pairing with B's dense models (STUDY_REUSE_DENSE)
  S=45,46,47,48,49
  B=(sst2:$S:structured@4:0.67/0.75:kd:hidden_weight=0 mrpc:$S:first_order:0.9:kd:hidden_weight=0
    rte:$S:first_order:0.9:kd:hidden_weight=0)
  A=(mrpc:42,43,44:structured@4:0.5/0.625,0.67/0.75:kd:hidden_weight=0
    mrpc:42,43,44:structured@4:0.5/0.625,0.67/0.75:kd:hidden_weight=1)
  (
    STUDY_ROOT=/dev/shm/pruning-choose timeout "${LIMIT_A:-220}" python3 -m bench.studies.pruning_study run --role choose --jobs 5 "${A[@]}" \
      --json "$out/choose2.json" >"$out/choose2.log" 2>&1 || echo "choose2 exited $?"
    mapfile -t C < <(study specs "$out/choose2.json" --seeds $S --speed "$speed")
    printf 'C: %s\n' "${C[@]}"
    STUDY_REUSE_DENSE=1 timeout $((limit - SECONDS)) python3 -m bench.studies.pruning_study run --role report --jobs 6 "${C[@]}" \
      --json "$out/report2.json" >"$out/report2.log" 2>&1 || echo "report2 exited $?"
  ) &
  timeout "$limit" python3 -m bench.studies.pruning_study run --role report --jobs 9 "${B[@]}" --json "$out/report1.json" >"$out/report1.log" 2>&1 ||
    echo "report1 exited $?"
  wait
  for f in choose2 report1 report2; do grep -v '^epoch=' "$out/$f.log" | grep -v Warn | tail -n 40; done
  exit 0
fi
if [ "$role" = final2 ]; then
  # session 15's one study call: the MRPC >= 3x recipe (chosen on dev in the final call) on all 5 report seeds,
  # and SST-2 reported on the same fresh seeds with recipes fixed beforehand (MRPC's dev choices with SST-2's
  # recovery epochs and lr; no SST-2 choice on dev fits the device time): structured heads 0.5 / FFN 0.625 (the
  # >= 2x shape) and first-order 90 % with logits KD; each seed's dense trained once and shared by its pruned runs
  S=45,46,47,48,49
  specs=(sst2:$S:structured@4:0.5/0.625:kd:hidden_weight=0 mrpc:$S:structured@4:0.67/0.75:kd:hidden_weight=0
    sst2:$S:first_order:0.9:kd:hidden_weight=0)
  timeout "$limit" python3 -m bench.studies.pruning_study run --role report --jobs "$jobs" "${specs[@]}" \
    --json "$out/final2.json" >"$out/final2.log" 2>&1 || echo "study exited $?"
  grep -v '^epoch=' "$out/final2.log" | grep -v Warn | tail -n 60
  exit 0
fi
if [ "$role" = final3 ]; then
  # SST-2's structured choice on dev (seeds 42-44): the two shapes at SST-2's recovery (2 epochs, lr 5e-5) and the
  # 3x shape with 4 recovery epochs at lr 1e-4; beside it, in the same call, the new candidate on the report seeds
  # (45-49; the 2-epoch candidates' report rows are final2's and the call before), so whichever dev chooses has
  # its report rows. The choice reads only the choose rows.
  C=(sst2:42,43,44:structured@4:0.5/0.625,0.67/0.75:kd:hidden_weight=0
    sst2:42,43,44:structured@4:0.67/0.75:kd:hidden_weight=0,structured_epochs=4,lr=0.0001)
  R=(sst2:45,46,47,48,49:structured@4:0.67/0.75:kd:hidden_weight=0,structured_epochs=4,lr=0.0001)
  choose_beside_report 3 9 8 30
  exit 0
fi
if [ "$role" = final4 ]; then
  # RTE's dense recipe chosen on dev (seeds 42-44) among longer schedules than call 1's 3 epochs, every candidate
  # also run on the report seeds (45-49) in the same call, so the chosen one has its report rows
  cands=(${CANDS:-dense_lr=5e-5,dense_epochs=10 dense_lr=1e-4,dense_epochs=10 dense_lr=3e-5,dense_epochs=20})
  C=() R=()
  for c in "${cands[@]}"; do C+=("rte:42,43,44:dense:-:none:$c"); R+=("rte:45,46,47,48,49:dense:-:none:$c"); done
  choose_beside_report 4 9 15 45
  exit 0
fi
if [ "$role" = report ]; then
  src=/dev/shm/pruning-choose.json
  [ -f "$src" ] || src=.study/choose.json
  mapfile -t specs < <(python3 -m bench.studies.pruning_study specs "$src" --seeds 45,46,47,48,49 --speed "$speed")
  printf '%s\n' "${specs[@]}"
else
  specs=("${choose[@]}")
fi
timeout "$limit" python3 -m bench.studies.pruning_study run --role "$role" --jobs "$jobs" "${specs[@]}" \
  --json "$out/$role.json" >"$out/$role.log" 2>&1 || echo "study exited $?"
[ "$role" = choose ] && cp "$out/choose.json" /dev/shm/pruning-choose.json
grep -v '^epoch=' "$out/$role.log" | tail -n 100
