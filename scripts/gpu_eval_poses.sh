#!/bin/bash
# The pose estimator on the ground-truth clips (scripts/eval_poses.py), every set, on the device
# machine's 16 CPU cores (the GPU only renders the clips):
#   run: carry [".whl"], command: bash scripts/gpu_eval_poses.sh [BACKEND ...]
# .whl/ holds pycolmap's wheel for the device's Python 3.12 (not there; its OpenCV is the
# image's): pip download --no-deps --only-binary=:all: --python-version 3.12 \
#   --platform manylinux_2_28_x86_64 -d .whl pycolmap==4.2.1
# The call travels without the four largest tracked files (the embedded weights and the public
# tiny state, which eval_poses.py does not read: it takes the model's settings from model.json).
# Writes $OUT/poses_<backend>_<set>.json and the log; sets: sharp and blurred (Gaussian 1.25 px),
# one ray per pixel and anti-aliased (3 x 3). On the H200 host of 2026-12-03 the four OpenCV sets
# took 85 s, the four COLMAP sets ~510 s: give each backend its own call (10-minute limit), or
# name the sets (SETS="3 0,3 1.25": supersample and blur, comma-separated) to split one.
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
python3 -c "import cv2, numpy; print('opencv', cv2.__version__, 'numpy', numpy.__version__)"
python3 -c "import pycolmap; print('pycolmap', pycolmap.__version__)" 2>/dev/null || echo "pycolmap: not available"
nproc; lscpu | grep "Model name"
WORKERS=${WORKERS:-16}
for backend in "${@:-opencv}"; do
  IFS=, read -r -a sets <<<"${SETS:-1 0,1 1.25,3 0,3 1.25}"
  for set in "${sets[@]}"; do
    read -r ss blur <<<"$set"
    name=${backend}_ss${ss}_blur${blur}
    echo "=== $name ==="
    start=$(date +%s)
    python3 scripts/eval_poses.py --backend "$backend" --supersample "$ss" --blur "$blur" --workers "$WORKERS" \
      --render-device cuda --json "$OUT/poses_$name.json" 2>&1 | grep -v -i warn | tail -4
    echo "($(( $(date +%s) - start )) s)"
  done
done 2>&1 | tee "$OUT/eval_poses.log"
