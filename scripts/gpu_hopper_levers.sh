#!/bin/bash
# The stage-1 forward levers of 2026-12-04 side by side on one GPU (run inside gpu_flash4.sh):
#   bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
# .ab/src is this checkout's src/ with `merged_linear` reduced to one call per layer (the
# projections unmerged); everything else is the same code. Rows, in this order:
#   merged / unmerged     compiled FA4 forward at 961 frames, default inductor settings
#   new, all sizes        the same code at 961 / 321 / 81 frames
#   fp8                   FP8 linears + FA4 at 961 frames
#   tuned                 --inductor coordinate_descent_tuning=true at 961 frames
# Logs and records go to $OUT (benchmarks/logs/ when copied back).
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
quiet() { grep --line-buffered -v "^W1\|UserWarning\|_warn_once\|exe_args"; }
bench() {  # NAME ARGS...
  local name=$1; shift
  python3 scripts/bench_hopper.py --skip-accuracy --json "$OUT/$name.json" "$@" 2>&1 | quiet | tee "$OUT/$name.log"
}
bench merged --impls sanawm-flash4 --frames 961 --timeout 150
PYTHONPATH=$PWD/.ab/src:$PYTHONPATH bench unmerged --impls sanawm-flash4 --frames 961 --timeout 150
bench merged_again --impls sanawm-flash4 --frames 961 --timeout 150
bench all_sizes --impls sanawm-flash4 --frames 321 81 --timeout 120
bench fp8 --impls sanawm-fp8-flash4 --frames 961 --timeout 150
bench tuned --impls sanawm-flash4 --frames 961 --timeout 300 --inductor coordinate_descent_tuning=true
echo "--- summary (s per forward) ---"
for f in merged unmerged merged_again all_sizes fp8 tuned; do
  python3 -c "import json,sys; [print(f'{sys.argv[1]:>13} {r[\"impl\"]:>18} {r[\"frames\"]:>4} {r[\"s_per_forward\"]:.3f} s {r[\"peak_gb\"]:.1f} GB first {r[\"first_call_s\"]:.0f} s') for r in json.load(open(sys.argv[2]))]" "$f" "$OUT/$f.json" 2>/dev/null
done
