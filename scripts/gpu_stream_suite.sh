#!/usr/bin/env bash
# The GPU numbers of benchmarks/STREAMING.md, in one device call (writes to $OUT):
#  1. flat memory: `sanawm bench` of the 2.6B preset (random weights) streaming 97 (warm-up),
#     961 and 4,801 frames at 704x1280 in chunks of 3 latent frames with the default window
#     (1 chunk + the first-chunk sink), one timed forward per chunk;
#  2. long-horizon quality of the embedded model: scripts/eval_long_horizon.py (5-minute loop
#     and figure-8, windows full / 1 / 4), each run stopped after DEADLINE seconds.
#   bash scripts/gpu_stream_suite.sh        # on the GPU, OUT set by the device tool
#   SKIP_BENCH=1 DEADLINE=520 bash scripts/gpu_stream_suite.sh   # part 2 only, full 5 minutes
# The device returns files of at most 16 MiB: the results come back as long_horizon.tgz (reports,
# per-frame JSON, plots, camera error) and the minute windows' frames as frames.tgz.part-* pieces
# (`cat frames.tgz.part-* | tar xz`).
set -euo pipefail
OUT=${OUT:-out/gpu_stream}
STEPS=${STEPS:-8}
DEADLINE=${DEADLINE:-240}
mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true) | tee "$OUT/bench_stream_window.log"
python3 -c "import torch, triton, numpy, PIL, safetensors; print('torch', torch.__version__, 'triton', triton.__version__)" \
    | tee -a "$OUT/bench_stream_window.log"
[ -n "${SKIP_BENCH:-}" ] || python3 -m sanawm bench --preset sanawm-2.6b --frames 97 961 4801 --mode streaming --chunk-size 3 --window 1 \
    --warmup 0 --iters 1 --json "$OUT/bench_stream_window.json" --csv "$OUT/bench_stream_window.csv" 2>&1 \
    | tee -a "$OUT/bench_stream_window.log"
python3 -u "$HERE/scripts/eval_long_horizon.py" --out "$OUT/long_horizon" --device "${DEVICE:-cuda}" --steps "$STEPS" --frames "${FRAMES:-4801}" \
    --configs "${CONFIGS:-full,1,4}" --deadline-s "$DEADLINE" --threads 2 2>&1 | tee "$OUT/long_horizon.log"
tar czf "$OUT/long_horizon.tgz" -C "$OUT" --exclude '*.frames.npz' long_horizon
(cd "$OUT" && tar cz long_horizon/*.frames.npz | split -b 15m - frames.tgz.part-) && rm -rf "$OUT/long_horizon"
ls -la "$OUT"
