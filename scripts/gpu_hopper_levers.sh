#!/bin/bash
# Compiled FA4 forward at 961 frames with and without the levers not yet timed, side by side on
# one GPU (run inside gpu_flash4.sh):
#   bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
# Rows, in this order: default inductor settings; the camera transforms through
# sanawm.ops.ucpe (--camera-kernel); both again with `--compile tuned` (coordinate-descent
# tuning of every fused kernel's launch shapes). Then the GDN kernels' launch sweep, which
# times Tuning.tf32_transition_pieces 0 / 2 / 3 (SWEEP=0 skips it).
# If .ab/src exists (another version of src/, carried beside it), its default row runs first.
# Logs and records go to $OUT.
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
quiet() { grep --line-buffered -v "^W1\|UserWarning\|_warn_once\|exe_args"; }
bench() {  # NAME ARGS...
  local name=$1; shift
  python3 scripts/bench_hopper.py --skip-accuracy --impls sanawm-flash4 --frames 961 --json "$OUT/$name.json" "$@" \
    2>&1 | quiet > "$OUT/$name.log"
  grep "frames:\|FAILED\|Error" "$OUT/$name.log" | sed "s/^/$name /"
}
names=""
if [ -d .ab/src ]; then PYTHONPATH=$PWD/.ab/src:$PYTHONPATH bench ab_default --timeout 150; names="ab_default"; fi
bench default --timeout 150
bench camera --timeout 150 --camera-kernel
bench tuned --timeout 300 --inductor coordinate_descent_tuning=true
bench tuned_camera --timeout 300 --inductor coordinate_descent_tuning=true --camera-kernel
echo "--- summary (s per forward) ---"
for f in $names default camera tuned tuned_camera; do
  python3 -c "import json,sys; [print(f'{sys.argv[1]:>12} {r[\"frames\"]:>4} {r[\"s_per_forward\"]:.3f} s {r[\"peak_gb\"]:.1f} GB first {r[\"first_call_s\"]:.0f} s') for r in json.load(open(sys.argv[2]))]" "$f" "$OUT/$f.json" 2>/dev/null
done
if [ "${SWEEP:-1}" = 1 ]; then
  python3 scripts/check_gdn_gpu.py --sweep 2>&1 | quiet > "$OUT/check_gdn_gpu_sweep.log"
  grep "^sweep\|triton" "$OUT/check_gdn_gpu_sweep.log"
fi
