#!/usr/bin/env bash
# The embedded teacher v2 in one device call (issue 16, point 2): train the DiT on the v2 VAE's
# latents (warm-started from the committed v1 DiT, or continuing a v2 model folder), then
# generate the evaluation clips of v1 and of the new teacher and score them with one estimator:
#   33 frames: the 32 held-out clips of scripts/eval_embedded.py (PSNR, SSIM, RotErr, turn ratio,
#              pose failures), `scripts/eval_student.py score`;
#   81 frames: its 16 random walks walked for 5 s, per-second PSNR against repeating frame 0.
# The training runs alone: on 2026-12-02 evaluation jobs beside it (CPU-bound: world building,
# ground-truth rendering, pose estimation) halved its step rate and did not finish themselves.
# Every process gets THREADS CPU threads. Results in $OUT (7 files at most, each < 16 MiB):
#   transformer.tgz    the new teacher's model.json + transformer/ (its VAE is $VAE)
#   results.tgz        logs, train_log.jsonl, summary.txt, the score reports and strips, the
#                      starting losses of the warm start (scripts/check_warm_start.py)
#   {v1,v2}_{33,81}.npz   the clips, when under 16 MiB (to score on a CPU if the call ends first)
#
#   VAE=.gpu_teacher2/vae TRAIN_S=330 bash .gpu_teacher2/scripts/gpu_teacher2.sh     # one H200
#   VAE=... START=DIR bash ...   # continue: DIR = a v2 model folder (model.json, transformer/, vae/)
#   SMOKE=1 VAE=... TRAIN_S=60 LIMIT=1 STEPS=2 WS_MAP=1 WS_CLIPS=1 bash scripts/gpu_teacher2.sh  # CPU check
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-out/gpu_teacher2}
VAE=${VAE:?the v2 VAE folder}
TRAIN_S=${TRAIN_S:-330}
ASSETS=${ASSETS:-src/sanawm/assets/embedded}  # the committed v1 model folder (baseline, and the start)
START=${START:-}      # a v2 model folder to continue instead (its vae/ is used, VAE is ignored)
THREADS=${THREADS:-3}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
LIMIT=${LIMIT:-32}
STEPS=${STEPS:-}        # sampling steps for a quick check (default: the models' 24)
SMOKE=${SMOKE:-}
POSE_WORKERS=${POSE_WORKERS:-12}
export PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
WORK=$(mktemp -d)
R=$WORK/results
mkdir -p "$R" "$WORK/c33" "$WORK/c81"
LOG=$R/run.log
# The scripts' default model is the package's bundled embedded one: point it at v1 if this
# copy of the package carries no weights.
if [ ! -f "$HERE/src/sanawm/assets/embedded/transformer/model.safetensors" ]; then
    rm -rf "$HERE/src/sanawm/assets/embedded" && ln -s "$(cd "$ASSETS" && pwd)" "$HERE/src/sanawm/assets/embedded"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__)"; nproc; date -u; } > "$LOG"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" >> "$LOG"; }
END_S=${END_S:-575}   # every job is stopped by then, so the results are packed inside the call
left() { local s=$(( T0 + END_S - $(date +%s) )); echo $(( s > 1 ? s : 1 )); }
STEP_ARGS=${STEPS:+--steps $STEPS}

gen() {  # label, frames, model folder
    timeout "$(left)" python3 -u "$HERE/scripts/eval_student.py" generate --label "$1" --frames "$2" --model "$3" --limit "$LIMIT" \
        $STEP_ARGS --out "$WORK/c$2" > "$R/gen_$1_$2.log" 2>&1
    stamp "generate $1 $2 frames: exit $?"
}
score() {  # frames, labels (one word list), out name, pose workers
    timeout "$(left)" python3 -u "$HERE/scripts/eval_student.py" score --clips "$WORK/c$1" --frames "$1" --labels $2 \
        --workers "$4" --strips 4 --out "$R/$3" > "$R/$3.log" 2>&1
    stamp "score $3: exit $?"
}

# 1. Where the warm start begins (loss before any step; seconds on the GPU).
if [ -z "$START" ]; then
    timeout "$(left)" python3 -u "$HERE/scripts/check_warm_start.py" --vae "$VAE" --assets "$ASSETS" \
        --map-clips "${WS_MAP:-64}" --clips "${WS_CLIPS:-16}" --json "$R/warm_start.json" > "$R/warm_start.log" 2>&1
    stamp "warm-start check: exit $?"
fi

# 2. The new teacher, alone on the machine (its data workers need the cores).
SMOKE_ARG=${SMOKE:+--smoke}
if [ -n "$START" ]; then TRAIN_FROM=(--assets "$START"); else TRAIN_FROM=(--assets "$ASSETS" --vae "$VAE"); fi
OMP_NUM_THREADS=8 timeout "$(left)" python3 -u "$HERE/scripts/train_embedded.py" --out "$WORK/train" --run-dir "$WORK/run" \
    "${TRAIN_FROM[@]}" --budget "$TRAIN_S" --no-progress $SMOKE_ARG > "$R/train.log" 2>&1
stamp "train: exit $?"
cp "$WORK/train/summary.txt" "$WORK/train/train_log.jsonl" "$R/" 2>/dev/null
cp "$WORK/run/dit_stage/config.json" "$R/train_config.json" 2>/dev/null
tar czf "$OUT/results.tgz" -C "$WORK" results  # packed again at the end
[ -d "$WORK/train/model" ] && tar czf "$OUT/transformer.tgz" -C "$WORK/train/model" model.json transformer

# 3. Clips of both models side by side (the GPU has room), then the scores.
gen v1 33 "$ASSETS" & gen v1 81 "$ASSETS" &
if [ -d "$WORK/train/model" ]; then gen v2 33 "$WORK/train/model" & gen v2 81 "$WORK/train/model" & fi
wait
for f in 33 81; do for m in v1 v2; do  # only files that can come back (< 16 MiB)
    [ -f "$WORK/c$f/$m.npz" ] && [ "$(stat -c %s "$WORK/c$f/$m.npz")" -lt 16000000 ] && cp "$WORK/c$f/$m.npz" "$OUT/${m}_$f.npz"
done; done
LABELS=(v1); [ -f "$WORK/c33/v2.npz" ] && LABELS=(v1 v2)
score 33 "${LABELS[*]}" eval33 "$POSE_WORKERS"
LABELS=(v1); [ -f "$WORK/c81/v2.npz" ] && LABELS=(v1 v2)
score 81 "${LABELS[*]}" eval81 "$POSE_WORKERS"
cp "$WORK"/c33/*.json "$WORK"/c81/*.json "$R/" 2>/dev/null
stamp "done"
tar czf "$OUT/results.tgz" -C "$WORK" results
cat "$LOG"; cat "$R/summary.txt" 2>/dev/null
for r in "$R"/eval*/report.md; do [ -f "$r" ] && echo "== $r" && grep "^|" "$r"; done
ls -la "$OUT"
