#!/bin/bash
# The cuDNN frontend's Python package (`nvidia-cudnn-frontend` on PyPI; the "cudnn-fp8" attention
# kernel, `sanawm.ops.cudnn_fp8`) on the device machine, which has no network; it drives the
# cuDNN that the device's torch ships:
#   run: carry [".gpu_cudnn"], command: bash scripts/gpu_cudnn.sh COMMAND ...
# runs COMMAND with the package and src/ on PYTHONPATH (in front of one already set, so it nests
# with gpu_fa3.sh: bash scripts/gpu_cudnn.sh bash scripts/gpu_fa3.sh COMMAND ..., carry
# [".gpu_cudnn", ".gpu_fa3"]).
# Staging on the development machine: pip download --no-deps --python-version 3.12
# --only-binary=:all: --platform manylinux_2_28_x86_64 nvidia-cudnn-frontend -d .gpu_cudnn
# (the device's Python is 3.12; 12 MB).
set -u
SITE=/tmp/cudnnsite
mkdir -p "$SITE" && python3 -m pip install -q --no-deps --target "$SITE" .gpu_cudnn/nvidia_cudnn_frontend-*.whl || exit 1
export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch, cudnn; print('torch', torch.__version__, 'cuDNN', torch.backends.cudnn.version(), 'frontend', cudnn.__version__, 'backend', cudnn.backend_version_string())" 2>&1 | tail -3
"$@"
