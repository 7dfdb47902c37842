#!/usr/bin/env bash
# Issue 14's 2.6B numbers in one device call (random weights, one GPU; writes to $OUT):
#  1. the 4-step streaming student: 961 frames at 704x1280, window 1 + first-chunk sink, stage 1
#     alone (scripts/bench_student_stream.py), then with chunk decoding by an LTX-2 VAE
#     (needs diffusers: install the carried wheel first);
#  2. one self-forcing DMD iteration (generator + critic) at 21 latent frames (scripts/bench_dmd.py).
#   bash scripts/gpu_student_bench.sh        # on the GPU, OUT set by the device tool
set -uo pipefail
OUT=${OUT:-out/gpu_student_bench}
mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
LOG=$OUT/bench_student.log
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$LOG"
run() { local limit=$1; shift; echo "\$ $*" >> "$LOG"; timeout "$limit" python3 -u "$@" >> "$LOG" 2>&1; echo "exit $?" >> "$LOG"; }
run 110 "$HERE/scripts/bench_student_stream.py" --chunk-times --json "$OUT/stream_stage1.json"
run 150 "$HERE/scripts/bench_dmd.py" --grad-checkpointing --iters 1 --json "$OUT/dmd_iteration.json"
run 150 "$HERE/scripts/bench_student_stream.py" --decode ltx2 --chunk-times --json "$OUT/stream_ltx2.json"
