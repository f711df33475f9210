#!/usr/bin/env bash
# On a lent GPU (see bench/RESULTS.md): our fine-tune vs HF Trainer, side by side, per task.
#   bench/gpu.sh mrpc cola       # needs .carry/ from `python ../shared/tools/make_gpu_carry.py .carry`
#   TAG=-tf32 ARGS="-S finetune.precision=tf32" bench/gpu.sh mrpc     # extra arguments, JSON named mrpc-tf32.json
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())'
for task in "$@"; do
  python3 -m bench.trainer_vs_ours --task "$task" --model .carry/minilm --glue-dir .carry/glue \
    ${ARGS:-} --json "$OUT/$task${TAG:-}.json" 2>&1 | tee "$OUT/$task${TAG:-}.log" | grep -v Warning
done
