#!/bin/bash
# FlashAttention-4 on the device machine (no network): unpack the carried wheels' files, then
# the attention micro-benchmark and the stage-1 forward with and without FA4.
#   run: carry [".gpu_fa4"], command: bash scripts/gpu_flash4.sh [COMMAND ...]
# With a COMMAND, that runs instead of the two benchmarks (PYTHONPATH set up for FA4 and src/).
# .gpu_fa4/ holds rest.tar.xz (flash-attn-4 4.0.0b36,
# nvidia-cutlass-dsl 4.8.1 + libs-base + libs-core + libs-cu13 without its 193 MB MLIR library,
# quack-kernels, apache-tvm-ffi, torch-c-dlpack-ext, einops, installed with ONE pip --target call:
# pip --target skips a top-level folder that already exists, and three of these wheels share
# nvidia_cutlass_dsl/) and extra.tar.xz (cuda-bindings and protobuf, which libs-core needs;
# used only where the device's Python lacks them).
# The MLIR library (50 MB xz-compressed) does not fit in the same call beside the repository
# (64 MiB travel in all): an earlier call on the same warm machine (< 30 s before) carries it
# as .gpu_fa4a/ir.xz and unpacks it to /tmp/fa4cache/ir.so; this call copies it to .fa4cache/:
#   call A: mkdir -p /tmp/fa4cache && xz -T16 -dc .gpu_fa4a/ir.xz > /tmp/fa4cache/ir.so
#   call B: mkdir -p .fa4cache && cp /tmp/fa4cache/ir.so .fa4cache/ && bash scripts/gpu_flash4.sh ...
# Both calls travel only without the four largest tracked files (the embedded weights and the
# public tiny state: move them out of the tree for the calls, back afterwards); call A also
# without benchmarks/ (13 MB).
# Staging from PyPI on the development machine (Python 3.12 wheels for the device):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 flash-attn-4==4.0.0b36 \
#     nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 nvidia-cutlass-dsl-libs-core==4.8.1 \
#     nvidia-cutlass-dsl-libs-cu13==4.8.1 quack-kernels apache-tvm-ffi torch-c-dlpack-ext einops
#   pip install --no-deps --no-index --target SITE --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     --only-binary=:all: ./*.whl      # then move _cutlass_ir.cu13.*.so out (ir.xz) and tar SITE (rest.tar.xz)
set -u
HERE=.gpu_fa4
SITE=/tmp/site
OUT=${OUT:-out}
mkdir -p "$SITE" "$OUT"
t0=$(date +%s)
tar -C "$SITE" -xJf $HERE/rest.tar.xz
cp .fa4cache/ir.so "$SITE/nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu13.cpython-312-x86_64-linux-gnu.so" || exit 1
export PYTHONPATH=$SITE:$SITE/nvidia_cutlass_dsl/dsl_packages:$PWD/src
if ! python3 -c "import cuda.bindings, google.protobuf" 2>/dev/null; then
  mkdir -p /tmp/site_extra && tar -C /tmp/site_extra -xJf $HERE/extra.tar.xz
  export PYTHONPATH=$PYTHONPATH:/tmp/site_extra
  echo "cuda-bindings / protobuf taken from extra.tar.xz"
fi
echo "unpacked in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -c "import flash_attn.cute.interface as f; print('flash-attn-4 imported')" 2>&1 | tail -5
if [ $# -gt 0 ]; then  # another command in the same environment, e.g. the clip benchmark
  "$@"
  echo "total $(( $(date +%s) - t0 )) s"
  exit
fi
FRAMES=${FRAMES:-81 321 961}
python3 scripts/bench_attention.py --frames $FRAMES --json "$OUT/attention_h200.json" 2>&1 | tee "$OUT/bench_attention.log"
python3 scripts/bench_hopper.py --impls ${IMPLS:-sanawm-compile sanawm-flash4} --frames $FRAMES \
  --budget ${BUDGET:-330} --timeout 200 --json "$OUT/hopper.json" 2>&1 | grep -v "^W1\|UserWarning" | tee "$OUT/bench_hopper.log"
echo "total $(( $(date +%s) - t0 )) s"
