#!/usr/bin/env bash
# Data-parallel scaling of the embedded DiT recipe on 1 and 2 GPUs (torchrun + NCCL; issue 16,
# point 3), in one device call on `nvidia-h200-x2`. Runs (all from the same seed and data, global
# batch $BATCH unless said): one (1 GPU), two (2 GPUs, $BATCH/2 each), one_fp32 (1 GPU, float32:
# the bf16 noise floor), two_half (2 GPUs, $STEPS/2 steps) resumed on 1 GPU as two_then_one, weak
# (2 GPUs, $BATCH each). Writes $OUT/scaling.json and $OUT/logs.tgz; prints the table last.
# Each run starts by filling the replay pool (rendering and encoding its clips): the warm-up
# steps keep that out of steps/s.
#   bash scripts/gpu_scaling.sh                    # on the GPUs, OUT set by the device tool
#   SMOKE=1 bash scripts/gpu_scaling.sh            # CPU, gloo, tiny model, a few steps
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-out/gpu_scaling}
SMOKE=${SMOKE:-}
STEPS=${STEPS:-50}
BATCH=${BATCH:-32}
WARMUP=${WARMUP:-10}
WORK=${WORK:-$(mktemp -d)}
POOL=${POOL:-}           # replay pool over all GPUs (default: the recipe's 256); >= 2 x BATCH for `weak`
RUN_LIMIT=${RUN_LIMIT:-150}  # seconds per run, so that one hung run (NCCL) does not take the call
EXTRA=(${POOL:+--pool "$POOL"})
if [ -n "$SMOKE" ]; then
    STEPS=${SMOKE_STEPS:-6}; BATCH=2; WARMUP=2; EXTRA=(--smoke --pool 4)
    export OMP_NUM_THREADS=1
fi
HALF=$((STEPS / 2))
mkdir -p "$OUT" "$WORK"
python3 - "$WORK/meta.json" <<'PY'
import json, platform, sys, torch
gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
json.dump({"torch": torch.__version__, "gpus": gpus, "cpu": platform.processor() or platform.machine()}, open(sys.argv[1], "w"))
PY
run() {  # name, nproc, then gpu_scaling.py train options
    local name=$1 nproc=$2; shift 2
    echo "== $name on $nproc process(es): $* ($(date -u +%T))" >> "$WORK/train.log"
    timeout "$RUN_LIMIT" python3 -m torch.distributed.run --standalone --nproc_per_node "$nproc" "$HERE/scripts/gpu_scaling.py" train --run-dir "$WORK/$name" \
        "${EXTRA[@]}" "$@" >> "$WORK/train.log" 2>&1
    echo "exit $?" >> "$WORK/train.log"
}
run one 1 --steps "$STEPS" --global-batch "$BATCH"
run two 2 --steps "$STEPS" --global-batch "$BATCH"
run two_half 2 --steps "$HALF" --global-batch "$BATCH"
cp -r "$WORK/two_half" "$WORK/two_then_one"
run two_then_one 1 --steps "$STEPS" --global-batch "$BATCH" --resume
run one_fp32 1 --steps "$STEPS" --global-batch "$BATCH" --precision fp32
run weak 2 --steps "$((WARMUP + 20))" --global-batch "$((2 * BATCH))" ${SMOKE:+--pool 8}
tar czf "$OUT/logs.tgz" -C "$WORK" train.log meta.json $(cd "$WORK" && ls -d */metrics.jsonl */config.json 2>/dev/null)
python3 "$HERE/scripts/gpu_scaling.py" report --work "$WORK" --out "$OUT" --warmup "$WARMUP"
