#!/usr/bin/env bash
# One FSDP2 training step of the 2.6B preset at 21 latent frames (704x1280, 161 frames) with
# gradient checkpointing, on 2 GPUs, and the same step on 1 GPU for comparison (issue 16,
# point 3), in one device call on `nvidia-h200-x2`. Runs (scripts/gpu_fsdp_step.py step):
#   two      2 GPUs, FSDP2, one clip per GPU (global batch 2)
#   one      1 GPU, unwrapped (the trainer's 1-process path), one clip
#   one_b2   1 GPU, the 2-GPU run's global batch of 2 clips
# Writes $OUT/fsdp_step.json (every run: per step, per rank) and $OUT/logs/*.log; prints the
# table last. A run that fails (e.g. out of memory) leaves its log and a gap in the table.
#   bash scripts/gpu_fsdp_step.sh                 # on the GPUs, OUT set by the device tool
#   RUNS="one one_b2" bash scripts/gpu_fsdp_step.sh   # one GPU only (`nvidia-h200`): the 1-GPU rows
#   SMOKE=1 bash scripts/gpu_fsdp_step.sh         # CPU, gloo, tiny model, 1 + 1 steps
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-out/gpu_fsdp_step}
SMOKE=${SMOKE:-}
RUNS=${RUNS:-two one one_b2}
WARMUP=${WARMUP:-2}
STEPS=${STEPS:-5}
RUN_LIMIT=${RUN_LIMIT:-240}  # seconds per run, so that one hung run (NCCL) does not take the call
TOTAL=${TOTAL:-560}          # seconds for all runs: the device tool allows 600 per call, the table must get out
# The CPU builds and initialises the 2.6B weights before sharding (torchrun would default to one thread).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
EXTRA=()
if [ -n "$SMOKE" ]; then
    WARMUP=1; STEPS=1; EXTRA=(--smoke); export OMP_NUM_THREADS=1
fi
mkdir -p "$OUT/logs"
rm -f "$OUT/two.json" "$OUT/one.json" "$OUT/one_b2.json"  # no stale record in the table
run() {  # name, processes, global batch
    local name=$1 nproc=$2 batch=$3 limit=$((TOTAL - SECONDS))
    [ "$limit" -gt "$RUN_LIMIT" ] && limit=$RUN_LIMIT
    if [ "$limit" -lt 30 ]; then echo "== $name: skipped, no time left"; return; fi
    echo "== $name: $nproc process(es), global batch $batch, at most ${limit}s ($(date -u +%T))"
    timeout -k 10 "$limit" python3 -m torch.distributed.run --standalone --nproc_per_node "$nproc" \
        "$HERE/scripts/gpu_fsdp_step.py" step --global-batch "$batch" --warmup "$WARMUP" --steps "$STEPS" \
        --json "$OUT/$name.json" "${EXTRA[@]}" > "$OUT/logs/$name.log" 2>&1
    local rc=$?
    echo "   exit $rc; last lines:"; tail -n 4 "$OUT/logs/$name.log" | sed 's/^/   /'
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
declare -A PROCS=([two]=2 [one]=1 [one_b2]=1) BATCH=([two]=2 [one]=1 [one_b2]=2)
records=()
for name in $RUNS; do
    run "$name" "${PROCS[$name]}" "${BATCH[$name]}"
    records+=("$OUT/$name.json")
done
python3 "$HERE/scripts/gpu_fsdp_step.py" report --out "$OUT" "${records[@]}"
