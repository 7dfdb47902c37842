#!/bin/bash
# FlashAttention-3's prebuilt forward (`fa3-fwd` 0.0.3 on PyPI: a torch-stable-ABI extension for
# sm90, so it loads on the device's torch 2.11) on the device machine, which has no network:
#   run: carry [".gpu_fa3"], command: bash scripts/gpu_fa3.sh COMMAND ...
# runs COMMAND with the wheel's files and src/ on PYTHONPATH (in front of one already set, so it
# nests inside gpu_flash4.sh: bash scripts/gpu_flash4.sh bash scripts/gpu_fa3.sh COMMAND ...,
# carry [".gpu_fa4", ".gpu_fa3"]).
# Staging on the development machine: pip download --no-deps fa3-fwd==0.0.3, unzip the wheel,
# and tar its fa3_fwd/, fa3_fwd_interface.py and fa3_fwd_config.py into .gpu_fa3/site.tar.xz
# (10 MB). The call travels only without the four largest tracked files (see gpu_flash4.sh).
set -u
SITE=/tmp/fa3site
mkdir -p "$SITE" && tar -C "$SITE" -xJf .gpu_fa3/site.tar.xz || exit 1
export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, fa3_fwd_interface; print('torch', torch.__version__, 'fa3-fwd imported')" 2>&1 | tail -3
"$@"
