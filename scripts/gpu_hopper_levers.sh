#!/bin/bash
# Compiled FA4 forward at 961 frames under inductor option sets, side by side on one GPU (run
# inside gpu_flash4.sh):
#   bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
# Rows, in this order: default inductor settings; `--compile tuned` (coordinate-descent tuning
# of every fused kernel's launch shapes); tuned plus pointwise autotuning and aggressive fusion.
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
  grep "frames:" "$OUT/$name.log" | sed "s/^/$name /"
}
names=""
if [ -d .ab/src ]; then PYTHONPATH=$PWD/.ab/src:$PYTHONPATH bench ab_default --timeout 150; names="ab_default"; fi
bench default --timeout 150
bench tuned --timeout 300 --inductor coordinate_descent_tuning=true
bench tuned_wide --timeout 300 --inductor coordinate_descent_tuning=true --inductor max_autotune_pointwise=true \
  --inductor aggressive_fusion=true
echo "--- summary (s per forward) ---"
for f in $names default tuned tuned_wide; do
  python3 -c "import json,sys; [print(f'{sys.argv[1]:>11} {r[\"frames\"]:>4} {r[\"s_per_forward\"]:.3f} s {r[\"peak_gb\"]:.1f} GB first {r[\"first_call_s\"]:.0f} s') for r in json.load(open(sys.argv[2]))]" "$f" "$OUT/$f.json" 2>/dev/null
done
