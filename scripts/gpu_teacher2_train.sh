#!/usr/bin/env bash
# Train the embedded teacher v2 (issue 16, point 2) over several device calls on one warm machine.
# The run folder (out/teacher2, ignored by git) stays on the device between calls made less than
# its idle release apart, so each call resumes the last checkpoint, optimizer state included.
#   run: bash scripts/gpu_teacher2_train.sh        (repeat; TRAIN_S seconds of training per call)
# The first call builds the v2 VAE first: v2-linear64, the 64-channel VAE started as the linear
# code of its size (PCA) and given no gradient step (`--budget 15` ends the VAE stage before its
# first step; benchmarks/vae2/README.md), then warm-starts the DiT from the committed v1 DiT.
# To continue on a fresh machine from an exported v2 model folder (model.json, transformer/, vae/,
# e.g. the one stored in commit 2e5d755 under benchmarks/teacher2/model_step2965), carry it and
# set START=that folder: the DiT starts from its weights (new AdamW moments, a short warm-up) and
# trains on its own VAE.
# Every call copies to $OUT: the VAE (first call), the DiT model folder exported from the EMA
# weights (model.json + transformer/, float16), the training log and a short run log.
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-out/gpu_teacher2_train}
RUN=${RUN:-$HERE/out/teacher2}
TRAIN_S=${TRAIN_S:-540}
START=${START:-}
export PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=8 MKL_NUM_THREADS=8
mkdir -p "$OUT" "$RUN"
LOG=$OUT/run.log
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__)"; nproc; date -u; } >> "$LOG"
T0=$(date +%s)
if [ -n "$START" ]; then
    FROM=(--assets "$START")  # the folder's own vae/ is the one trained on
else
    FROM=(--vae "$RUN/vae_export/vae")
    if [ ! -f "$RUN/vae_export/vae/config.json" ]; then
        python3 -u "$HERE/scripts/train_embedded.py" --vae-only --linear-shortcut --vae-channels 64 --budget 15 \
            --run-dir "$RUN/vae_run" --out "$RUN/vae_export" --no-progress > "$OUT/vae.log" 2>&1
        echo "vae: exit $? after $(( $(date +%s) - T0 )) s" >> "$LOG"
        tar czf "$OUT/vae.tgz" -C "$RUN/vae_export" vae vae_report.json
    fi
fi
left=$(( TRAIN_S - ($(date +%s) - T0) ))
python3 -u "$HERE/scripts/train_embedded.py" "${FROM[@]}" --run-dir "$RUN/dit_run" --out "$RUN/dit_export" \
    --budget "$left" --no-progress > "$OUT/train.log" 2>&1
echo "train: exit $? after $(( $(date +%s) - T0 )) s" >> "$LOG"
cp "$RUN/dit_export/train_log.jsonl" "$RUN/dit_export/summary.txt" "$OUT/" 2>/dev/null
[ -d "$RUN/dit_export/model" ] && tar czf "$OUT/model.tgz" -C "$RUN/dit_export/model" model.json transformer
tail -n 3 "$OUT/train_log.jsonl" 2>/dev/null
cat "$LOG"
