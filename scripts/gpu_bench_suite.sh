#!/usr/bin/env bash
# The GPU numbers of benchmarks/README.md, in one device call (writes 7 files to $OUT):
#   sanawm bench of the 2.6B preset (forward at 81 / 321 / 961 frames, 704x1280, and streaming
#   961 frames in chunks of 3 latent frames), then scripts/profile_train_step.py (embedded-model training step).
#   bash scripts/gpu_bench_suite.sh        # on the H100, OUT set by the device tool
set -euo pipefail
OUT=${OUT:-out/gpu_bench}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/bench_forward.log"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/bench_forward.log"
python -m sanawm bench --preset sanawm-2.6b --frames 81 321 961 \
    --json "$OUT/bench_forward.json" --csv "$OUT/bench_forward.csv" 2>&1 | tee -a "$OUT/bench_forward.log"
python -m sanawm bench --preset sanawm-2.6b --frames 961 --mode streaming --chunk-size 3 \
    --json "$OUT/bench_streaming.json" --csv "$OUT/bench_streaming.csv" 2>&1 | tee "$OUT/bench_streaming.log"
python -u scripts/profile_train_step.py --iters 3 2>&1 | tee "$OUT/profile_train_step.log"
