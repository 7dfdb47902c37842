#!/bin/bash
# Compiled FA4 forward at 961 frames, side by side on one GPU, and the measurements behind the
# levers of the fast path (run inside gpu_flash4.sh):
#   bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
#   ROWS="default tuned" bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
# Rows (ROWS, in the order given; default "default tuned ucpe sweep"):
#   default    bench_hopper.py, sanawm-flash4 at 961 frames, default inductor settings
#   tuned      the same with `--compile tuned` (coordinate-descent tuning of every fused kernel)
#   ucpe       scripts/bench_ucpe.py: the camera transform alone, inductor vs sanawm.ops.ucpe
#   sweep      scripts/check_gdn_gpu.py --sweep: the GDN kernels' accuracy and launch shapes
#   precision  scripts/check_gdn_precision.py: the 2.6B velocity with the GDN kernels' precisions
#   profile    scripts/profile_dit.py: kernel breakdown of the compiled FA4 forward
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
ROWS=${ROWS:-default tuned ucpe sweep}
for row in $ROWS; do
  case $row in
    default) bench default --timeout 150; names="$names default" ;;
    tuned) bench tuned --timeout 300 --inductor coordinate_descent_tuning=true; names="$names tuned" ;;
    ucpe)
      timeout 120 python3 scripts/bench_ucpe.py 2>&1 | quiet > "$OUT/bench_ucpe.log"; tail -9 "$OUT/bench_ucpe.log" ;;
    sweep)
      timeout 200 python3 scripts/check_gdn_gpu.py --sweep 2>&1 | quiet > "$OUT/check_gdn_gpu_sweep.log"
      grep "^sweep\|triton" "$OUT/check_gdn_gpu_sweep.log" ;;
    precision)
      timeout 200 python3 scripts/check_gdn_precision.py --frames 961 --json "$OUT/check_gdn_precision.json" 2>&1 \
        | quiet > "$OUT/check_gdn_precision.log"; tail -3 "$OUT/check_gdn_precision.log" ;;
    profile)
      timeout 200 python3 scripts/profile_dit.py --frames 961 --compile --attention flash4 --rows 40 \
        --json "$OUT/profile.json" 2>&1 | quiet > "$OUT/profile.log"
      grep -A40 "^===" "$OUT/profile.log" | cut -c1-160 | head -45 ;;
    *) echo "unknown row $row"; exit 2 ;;
  esac
done
echo "--- summary (s per forward) ---"
for f in $names; do
  python3 -c "import json,sys; [print(f'{sys.argv[1]:>12} {r[\"frames\"]:>4} {r[\"s_per_forward\"]:.3f} s {r[\"peak_gb\"]:.1f} GB first {r[\"first_call_s\"]:.0f} s') for r in json.load(open(sys.argv[2]))]" "$f" "$OUT/$f.json" 2>/dev/null
done
