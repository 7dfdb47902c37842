#!/bin/bash
# Compiled FA4 forward at 961 frames, side by side on one GPU, and the measurements behind the
# levers of the fast path (run inside gpu_flash4.sh):
#   bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
#   ROWS="default tuned" bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
# Rows (ROWS, in the order given; unset: "default tuned ucpe sweep"; empty: none):
#   default    bench_hopper.py, sanawm-flash4 at 961 frames, default inductor settings
#   tuned      the same with `--compile tuned` (coordinate-descent tuning of every fused kernel)
#   sizes      sanawm-flash4 at 321 and 81 frames, default and tuned
#   fp8        sanawm-fp8-flash3 at 961 frames, default and tuned (FP8 linears + FA3's FP8
#              attention: run inside gpu_fa3.sh too, e.g.
#              bash scripts/gpu_flash4.sh bash scripts/gpu_fa3.sh env ROWS=fp8 bash scripts/gpu_hopper_levers.sh)
#   fp8_accuracy  sanawm-fp8-flash3 at 961 frames, default compile, with its velocity errors at 81
#              frames (vs eager bf16 and float32; inside gpu_fa3.sh)
#   fp8_all_accuracy  the same with every FP8 family in FP8 (--fp8-families all), e.g. side by side
#              with the default families: ROWS="fp8_all_accuracy fp8_accuracy"
#   fp8_multikernel  sanawm-fp8-flash3 at 961 frames with inductor's multi-kernel reductions
#              (triton.multi_kernel=1: persistent and looped variants of each reduction compiled
#              and the faster picked at run time; the 2240-wide per-token amaxes and norms are
#              looped by default, above inductor's 1024 threshold for persistent reductions)
#   fp8_modules  scripts/check_fp8_modules.py on the 2.6B model at 81 frames: the velocity error of
#              each FP8 matmul family (eager, cuBLAS FP8, every branch open)
#   ucpe       scripts/bench_ucpe.py: the camera transform alone, inductor vs sanawm.ops.ucpe
#   sweep      scripts/check_gdn_gpu.py --sweep: the GDN kernels' accuracy and launch shapes
#   precision  scripts/check_gdn_precision.py: the 2.6B velocity with the GDN kernels' precisions
#   profile    scripts/profile_dit.py: kernel breakdown of the compiled FA4 forward
#   profile_fp8  the same for FP8 linears + FA3's FP8 attention (inside gpu_fa3.sh too): which
#              activation quantisations inductor fuses into their producers
# If .ab/src exists (another version of src/, carried beside it), its rows AB_ROWS (default
# "default"; any of default, tuned, sizes, fp8, fp8_accuracy, fp8_all_accuracy) run first, named ab_<row>. The
# scripts are this tree's: what they call must exist in .ab/src too.
# Logs and records go to $OUT.
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
quiet() { grep --line-buffered -v "^W1\|UserWarning\|_warn_once\|exe_args"; }
bench() {  # NAME IMPL FRAMES ARGS...   (--skip-accuracy unless ACCURACY=1)
  local name=$1 impl=$2 frames=$3; shift 3
  local skip="--skip-accuracy"; [ "${ACCURACY:-0}" = 1 ] && skip=""
  python3 scripts/bench_hopper.py $skip --impls "$impl" --frames $frames --json "$OUT/$name.json" "$@" \
    2>&1 | quiet > "$OUT/$name.log"
  grep "frames:\|FAILED\|Error" "$OUT/$name.log" | sed "s/^/$name /"
  names="$names $name"
}
timed_row() {  # PREFIX ROW: the rows that time the forward; 1 if ROW is not one of them
  local p=$1
  case $2 in
    default) bench ${p}default sanawm-flash4 961 --timeout 150 ;;
    tuned) bench ${p}tuned sanawm-flash4 961 --timeout 300 --inductor coordinate_descent_tuning=true ;;
    sizes)
      bench ${p}sizes sanawm-flash4 "321 81" --timeout 150
      bench ${p}sizes_tuned sanawm-flash4 "321 81" --timeout 300 --inductor coordinate_descent_tuning=true ;;
    fp8)
      bench ${p}fp8 sanawm-fp8-flash3 961 --timeout 150
      bench ${p}fp8_tuned sanawm-fp8-flash3 961 --timeout 300 --inductor coordinate_descent_tuning=true ;;
    fp8_accuracy) ACCURACY=1 bench ${p}fp8_accuracy sanawm-fp8-flash3 961 --timeout 300 ;;
    fp8_multikernel) bench ${p}fp8_multikernel sanawm-fp8-flash3 961 --timeout 300 --inductor triton.multi_kernel=1 ;;
    fp8_all_accuracy) ACCURACY=1 bench ${p}fp8_all_accuracy sanawm-fp8-flash3 961 --timeout 300 --fp8-families all ;;
    *) return 1 ;;
  esac
}
names=""
if [ -d .ab/src ]; then
  for row in ${AB_ROWS:-default}; do
    PYTHONPATH=$PWD/.ab/src${PYTHONPATH:+:$PYTHONPATH} timed_row ab_ $row || { echo "unknown A/B row $row"; exit 2; }
  done
fi
ROWS=${ROWS-default tuned ucpe sweep}  # ROWS="" runs none (only the A/B rows)
for row in $ROWS; do
  timed_row "" $row && continue
  case $row in
    fp8_modules)
      timeout 400 python3 scripts/check_fp8_modules.py --models random --preset sanawm-2.6b --device cuda \
        --frames 81 --together "attention proj+camera out proj" 2>&1 | quiet > "$OUT/check_fp8_modules.log"
      tail -14 "$OUT/check_fp8_modules.log" ;;
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
    profile_fp8)
      timeout 200 python3 scripts/profile_dit.py --frames 961 --compile --variants fp8 --attention flash3-fp8 \
        --rows 60 --json "$OUT/profile_fp8.json" 2>&1 | quiet > "$OUT/profile_fp8.log"
      grep -A60 "^===" "$OUT/profile_fp8.log" | cut -c1-160 | head -65 ;;
    *) echo "unknown row $row"; exit 2 ;;
  esac
done
echo "--- summary (s per forward) ---"
for f in $names; do
  python3 - "$f" "$OUT/$f.json" <<'PY' 2>/dev/null
import json, sys
for r in json.load(open(sys.argv[2])):
    print(f"{sys.argv[1]:>16} {r['frames']:>4} {r['s_per_forward']:.3f} s {r['peak_gb']:.1f} GB first {r['first_call_s']:.0f} s")
    errors = {k: r[k] for k in r if k.endswith(("_rel_l2", "_cos"))}
    if errors:
        print(" " * 17, f"at {r['accuracy_frames']} frames:", ", ".join(f"{k} {v:.4g}" for k, v in errors.items()))
PY
done
