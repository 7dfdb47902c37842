#!/usr/bin/env bash
# The embedded student's GPU run in one device call (issue 14): distil, then generate the
# evaluation clips of the teacher and of the student variants (scored later on a CPU with
# `scripts/eval_student.py score`). Everything needed afterwards goes to $OUT in 8 files:
#   model_ode.tgz, model_dmd.tgz       the ODE stage's and the final DMD stage's model folders
#   teacher.npz, ode4.npz, dmd4.npz, dmd3.npz, dmd2.npz   clips (eval_student.py generate)
#   logs.tgz                           train.log, train_log.jsonl, summary, stage configs, clip metadata
#   BUDGET=420 bash scripts/gpu_student.sh        # on the GPU, OUT set by the device tool
#   TEACHER=DIR RUN=DIR NO_CLIPS=1 BUDGET=450 bash scripts/gpu_student.sh   # distil only (clips and
#       scores later, e.g. by gpu_teacher2.sh's EXTRA models, while RUN stays on the device)
set -uo pipefail
OUT=${OUT:-out/gpu_student}
BUDGET=${BUDGET:-420}
PAIRS=${PAIRS:-512}
BATCH=${BATCH:-32}
ODE_LR=${ODE_LR:-1e-4}  # the recipe's 2e-5 is for a 2.6B model; 8 M parameters in a few minutes need more
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-}
LIMIT=${LIMIT:-32}
NO_CLIPS=${NO_CLIPS:-}
mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
RUN=${RUN:-/tmp/student_run}
TEACHER=${TEACHER:-$HERE/src/sanawm/assets/embedded}  # any copy of the embedded model folder
WORK=$(mktemp -d)
LOG=$WORK/logs
mkdir -p "$LOG"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__)"; date -u; } > "$LOG/train.log"

python3 -u "$HERE/scripts/distill_embedded.py" --out "$WORK/export" --run-dir "$RUN" --teacher "$TEACHER" --budget "$BUDGET" \
    --pairs "$PAIRS" --batch-size "$BATCH" --ode-lr "$ODE_LR" --move-on --no-progress $SMOKE >> "$LOG/train.log" 2>&1
echo "distill exit $? at $(date -u)" >> "$LOG/train.log"

pack_logs() {
    cp "$WORK"/export/summary.txt "$WORK"/export/train_log.jsonl "$LOG"/ 2>/dev/null
    for stage in ode dmd_warmup dmd; do
        cp "$RUN/$stage/config.json" "$LOG/config_$stage.json" 2>/dev/null
        cp "$RUN/$stage/metrics.jsonl" "$LOG/metrics_$stage.jsonl" 2>/dev/null
    done
    tar czf "$OUT/logs.tgz" -C "$WORK" logs
}
pack_logs
for stage in ode dmd; do  # the VAE is the teacher's: only model.json and the transformer travel
    [ -d "$RUN/$stage/model" ] && tar czf "$OUT/model_$stage.tgz" -C "$RUN/$stage/model" model.json transformer
done

clips() {  # label, then eval_student.py generate options
    local label=$1; shift
    timeout 120 python3 -u "$HERE/scripts/eval_student.py" generate --label "$label" --out "$WORK/clips" \
        --device "$DEVICE" --limit "$LIMIT" "$@" >> "$LOG/clips.log" 2>&1
    echo "$label exit $?" >> "$LOG/clips.log"
    [ -f "$WORK/clips/$label.npz" ] && cp "$WORK/clips/$label.npz" "$OUT/" && cp "$WORK/clips/$label.json" "$LOG/"
}
[ -n "$NO_CLIPS" ] && { pack_logs; ls -la "$OUT"; exit 0; }
clips teacher --model "$TEACHER"
[ -d "$RUN/dmd/model" ] && clips dmd4 --model "$RUN/dmd/model"
[ -d "$RUN/ode/model" ] && clips ode4 --model "$RUN/ode/model"
[ -d "$RUN/dmd/model" ] && clips dmd2 --model "$RUN/dmd/model" --timesteps 1000 764
[ -d "$RUN/dmd/model" ] && clips dmd3 --model "$RUN/dmd/model" --timesteps 1000 908 764
date -u >> "$LOG/train.log"
pack_logs
ls -la "$OUT"
