#!/usr/bin/env bash
# The embedded teacher v2 (issue 16, point 2) on one GPU machine, over one or several device calls.
# The run folder RUN (default out/teacher2, ignored by git) stays on the device between calls made
# less than its idle release apart, so each call resumes the last checkpoint, AdamW state included.
#
#   TRAIN_S=540 bash scripts/gpu_teacher2.sh        # train; repeat to go on
#   START=DIR SEED=1 LR=1.5e-4 TRAIN_S=540 bash scripts/gpu_teacher2.sh   # continue an exported model
#   TRAIN_S=0 EVAL=1 bash scripts/gpu_teacher2.sh   # clips of v1 and of the run's model (+ SCORE=1)
#   START=DIR TRAIN_S=0 DECODER_S=170 LATENT_NOISE=0.5 EVAL=1 SCORE=1 NO_V1=1 FRAMES=33 bash ...
#   END_S: seconds after the start by which every evaluation job is stopped (default 575)
#   SMOKE=1 TRAIN_S=60 EVAL=1 LIMIT=1 STEPS=2 bash scripts/gpu_teacher2.sh  # CPU check of the paths
#
# Training. First call without START: builds the v2 VAE, v2-linear64 (64 latent channels started as
# the linear code of their size, PCA, with no gradient step: benchmarks/vae2/README.md), then
# warm-starts the DiT from the committed DiT (`--vae`, latent layers mapped; it was v1's until
# 2026-12-03, since then the shipped v2's). With START = an
# exported v2 model folder (model.json, transformer/, vae/; e.g. commit 2e5d755's
# benchmarks/teacher2/model_step2965) the DiT starts from its weights on its own VAE (new AdamW
# moments, a short warm-up); SEED other than its run's gives it clips it has not seen. LR: the DiT's
# learning rate (default the recipe's 4e-4); a resumed run may change it between calls, SEED not.
# CHANNEL_POWER: the DiT loss per latent channel ~ (latent std)^(2 x it) (default 0.5, which beat
# 0, all channels alike, in benchmarks/teacher2/README.md's fifth run). CAUSAL_PROB: the chance a
# DiT step is chunk-causal (default: the recipe's 0.25; the sixth run found v2's streaming drift).
#
# Decoder (DECODER_S > 0, after any training): the model's VAE decoder trains for DECODER_S seconds
# on latents with noise up to LATENT_NOISE (`train_embedded.py --decoder-of`); its encoder and
# latent statistics stay, so the DiT is unchanged. The result is the model folder $RUN/model_dec
# (label v2dec in the evaluation, beside v2 with its old decoder) and vae_dec.tgz in $OUT.
#
# Evaluation (EVAL=1, after any training of the call): the clips of `scripts/eval_student.py` for v1
# (ASSETS, the committed model, still labelled v1: since 2026-12-03 it is the shipped v2) and for the run's model: 33 frames (the 32 held-out clips) and 81
# frames (its 16 random walks for 5 s), LIMIT clips of each; FRAMES="33" for one length, NO_V1=1
# leaves v1 out, BASE=DIR adds the model folder DIR (label "base": e.g. START, beside what the
# call trained from it), EXTRA="label=DIR ..." adds more model folders under their labels (a
# student: its own mode and timesteps); MODE=streaming generates every label chunk-causally
# (default: each model's own mode). The clips come back as .npz (scored on
# any CPU with `eval_student.py score`); SCORE=1 also scores them here (pose estimation, CPU-bound).
# Training runs alone: evaluation jobs beside it halved its step rate on 2026-12-02.
#
# $OUT gets: run.log; train.log, train_log.jsonl, summary.txt and model.tgz (model.json +
# transformer/, float16 EMA weights) when it trained; vae.tgz when it built the VAE;
# decoder.log and vae_dec.tgz when it trained a decoder; {label}_{frames}.npz (each when < 16 MiB)
# and eval.tgz (logs, reports, strips) when it evaluated.
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-out/gpu_teacher2}
RUN=${RUN:-$HERE/out/teacher2}
TRAIN_S=${TRAIN_S:-540}
START=${START:-}
LR=${LR:-}
CHANNEL_POWER=${CHANNEL_POWER:-0.5}
SEED=${SEED:-0}
EVAL=${EVAL:-}
SCORE=${SCORE:-}
ASSETS=${ASSETS:-$HERE/src/sanawm/assets/embedded}
LIMIT=${LIMIT:-32}
FRAMES=${FRAMES:-33 81}
NO_V1=${NO_V1:-}
BASE=${BASE:-}
EXTRA=${EXTRA:-}
MODE=${MODE:-}
CAUSAL_PROB=${CAUSAL_PROB:-}
DECODER_S=${DECODER_S:-0}
LATENT_NOISE=${LATENT_NOISE:-0.5}
DECODER_POOL=${DECODER_POOL:-512}  # clips rendered before the decoder's first step
STEPS=${STEPS:-}           # sampling steps for a quick check (default: the models' 24)
THREADS=${THREADS:-3}      # CPU threads per evaluation process (four run at once)
POSE_WORKERS=${POSE_WORKERS:-12}
SMOKE=${SMOKE:+--smoke}
export PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT" "$RUN"
LOG=$OUT/run.log
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__)"; nproc; date -u; } >> "$LOG"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" >> "$LOG"; }
END_S=${END_S:-575}  # evaluation jobs are stopped by then, so their results are packed inside the call
left() { local s=$(( T0 + END_S - $(date +%s) )); echo $(( s > 1 ? s : 1 )); }

if [ "$TRAIN_S" -gt 0 ]; then
    if [ -n "$START" ]; then
        FROM=(--assets "$START")  # the folder's own vae/ is the one trained on
    else
        FROM=(--assets "$ASSETS" --vae "$RUN/vae_export/vae")
        if [ ! -f "$RUN/vae_export/vae/config.json" ]; then
            OMP_NUM_THREADS=8 python3 -u "$HERE/scripts/train_embedded.py" --vae-only --linear-shortcut --vae-channels 64 \
                --vae-steps 0 --budget 300 --run-dir "$RUN/vae_run" --out "$RUN/vae_export" --no-progress $SMOKE \
                > "$OUT/vae.log" 2>&1
            stamp "vae: exit $?"
            tar czf "$OUT/vae.tgz" -C "$RUN/vae_export" vae vae_report.json
        fi
    fi
    budget=$(( TRAIN_S - ($(date +%s) - T0) ))
    OMP_NUM_THREADS=8 python3 -u "$HERE/scripts/train_embedded.py" "${FROM[@]}" --run-dir "$RUN/dit_run" \
        --out "$RUN/dit_export" --budget "$budget" --seed "$SEED" ${LR:+--lr "$LR"} --channel-weight-power "$CHANNEL_POWER" ${CAUSAL_PROB:+--causal-prob "$CAUSAL_PROB"} --no-progress $SMOKE \
        > "$OUT/train.log" 2>&1
    stamp "train: exit $?"
    cp "$RUN/dit_export/train_log.jsonl" "$RUN/dit_export/summary.txt" "$OUT/" 2>/dev/null
    [ -d "$RUN/dit_export/model" ] && tar czf "$OUT/model.tgz" -C "$RUN/dit_export/model" model.json transformer
    tail -n 3 "$OUT/train_log.jsonl" 2>/dev/null
fi

MODEL=$RUN/dit_export/model
[ -f "$MODEL/model.json" ] || MODEL=$START
if [ "$DECODER_S" -gt 0 ]; then
    [ -n "$MODEL" ] && [ -f "$MODEL/model.json" ] || { stamp "decoder: no model in $RUN/dit_export or START"; exit 1; }
    rm -rf "$RUN/decoder_run" "$RUN/decoder_export"
    OMP_NUM_THREADS=8 python3 -u "$HERE/scripts/train_embedded.py" --vae-only --decoder-of "$MODEL/vae" \
        --latent-noise "$LATENT_NOISE" --vae-pool "$DECODER_POOL" --budget "$DECODER_S" --run-dir "$RUN/decoder_run" --out "$RUN/decoder_export" \
        --no-progress $SMOKE > "$OUT/decoder.log" 2>&1
    stamp "decoder: exit $?"
    rm -rf "$RUN/model_dec" && mkdir -p "$RUN/model_dec"
    cp -r "$MODEL/model.json" "$MODEL/transformer" "$RUN/model_dec/" && cp -r "$RUN/decoder_export/vae" "$RUN/model_dec/"
    tar czf "$OUT/vae_dec.tgz" -C "$RUN/decoder_export" vae vae_report.json
fi

if [ -n "$EVAL" ]; then
    [ -n "$MODEL" ] && [ -f "$MODEL/model.json" ] || { stamp "eval: no model in $RUN/dit_export or START"; exit 1; }
    declare -A MODELS=([v2]=$MODEL)
    [ -z "$NO_V1" ] && MODELS[v1]=$ASSETS
    [ -n "$BASE" ] && MODELS[base]=$BASE
    for pair in $EXTRA; do MODELS[${pair%%=*}]=${pair#*=}; done
    [ "$DECODER_S" -gt 0 ] && MODELS[v2dec]=$RUN/model_dec
    LABELS=$(printf '%s\n' "${!MODELS[@]}" | sort | tr '\n' ' ')
    E=$RUN/eval
    rm -rf "$E" && mkdir -p "$E/results" && for f in $FRAMES; do mkdir -p "$E/c$f"; done
    export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
    gen() {  # label, frames, model folder
        timeout "$(left)" python3 -u "$HERE/scripts/eval_student.py" generate --label "$1" --frames "$2" --model "$3" --limit "$LIMIT" \
            ${STEPS:+--steps "$STEPS"} ${MODE:+--mode "$MODE"} --out "$E/c$2" > "$E/results/gen_$1_$2.log" 2>&1
        stamp "generate $1 $2 frames: exit $?"
    }
    for f in $FRAMES; do for m in $LABELS; do gen "$m" "$f" "${MODELS[$m]}" & done; done
    wait
    for f in $FRAMES; do for m in $LABELS; do  # only files that can come back (< 16 MiB)
        [ -f "$E/c$f/$m.npz" ] && [ "$(stat -c %s "$E/c$f/$m.npz")" -lt 16000000 ] && cp "$E/c$f/$m.npz" "$OUT/${m}_$f.npz"
    done; done
    cp "$E"/c33/*.json "$E/results/" 2>/dev/null
    if [ -n "$SCORE" ]; then
        for f in $FRAMES; do
            timeout "$(left)" python3 -u "$HERE/scripts/eval_student.py" score --clips "$E/c$f" --frames "$f" --labels $LABELS \
                --workers "$POSE_WORKERS" --strips 4 --out "$E/results/eval$f" > "$E/results/eval$f.log" 2>&1
            stamp "score $f frames: exit $?"
        done
    fi
    tar czf "$OUT/eval.tgz" -C "$E" results
    for r in "$E"/results/eval*/report.md; do [ -f "$r" ] && echo "== $r" && grep "^|" "$r"; done
fi
cat "$LOG"
