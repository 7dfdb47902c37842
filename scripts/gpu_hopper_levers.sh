#!/bin/bash
# Compiled FA4 forward at 961 frames, side by side on one GPU, and the measurements behind the
# levers of the fast path (run inside gpu_flash4.sh):
#   bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
#   ROWS="default tuned" bash scripts/gpu_flash4.sh bash scripts/gpu_hopper_levers.sh
# Rows (ROWS, in the order given; default "default tuned ucpe sweep"):
#   default    bench_hopper.py, sanawm-flash4 at 961 frames, default inductor settings
#   tuned      the same with `--compile tuned` (coordinate-descent tuning of every fused kernel)
#   sizes      sanawm-flash4 at 321 and 81 frames, default and tuned
#   fp8        sanawm-fp8-flash3 at 961 frames, default and tuned (FP8 linears + FA3's FP8
#              attention: run inside gpu_fa3.sh too, e.g.
#              bash scripts/gpu_flash4.sh bash scripts/gpu_fa3.sh env ROWS=fp8 bash scripts/gpu_hopper_levers.sh)
#   ucpe       scripts/bench_ucpe.py: the camera transform alone, inductor vs sanawm.ops.ucpe
#   sweep      scripts/check_gdn_gpu.py --sweep: the GDN kernels' accuracy and launch shapes
#   precision  scripts/check_gdn_precision.py: the 2.6B velocity with the GDN kernels' precisions
#   profile    scripts/profile_dit.py: kernel breakdown of the compiled FA4 forward
#   profile_fp8  the same for FP8 linears + FA3's FP8 attention (inside gpu_fa3.sh too): which
#              activation quantisations inductor fuses into their producers
# If .ab/src exists (another version of src/, carried beside it), its default row runs first.
# Logs and records go to $OUT.
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
quiet() { grep --line-buffered -v "^W1\|UserWarning\|_warn_once\|exe_args"; }
bench() {  # NAME IMPL FRAMES ARGS...
  local name=$1 impl=$2 frames=$3; shift 3
  python3 scripts/bench_hopper.py --skip-accuracy --impls "$impl" --frames $frames --json "$OUT/$name.json" "$@" \
    2>&1 | quiet > "$OUT/$name.log"
  grep "frames:\|FAILED\|Error" "$OUT/$name.log" | sed "s/^/$name /"
}
names=""
if [ -d .ab/src ]; then PYTHONPATH=$PWD/.ab/src:$PYTHONPATH bench ab_default sanawm-flash4 961 --timeout 150; names="ab_default"; fi
ROWS=${ROWS:-default tuned ucpe sweep}
for row in $ROWS; do
  case $row in
    default) bench default sanawm-flash4 961 --timeout 150; names="$names default" ;;
    tuned) bench tuned sanawm-flash4 961 --timeout 300 --inductor coordinate_descent_tuning=true; names="$names tuned" ;;
    sizes)
      bench sizes sanawm-flash4 "321 81" --timeout 150
      bench sizes_tuned sanawm-flash4 "321 81" --timeout 300 --inductor coordinate_descent_tuning=true
      names="$names sizes sizes_tuned" ;;
    fp8)
      bench fp8 sanawm-fp8-flash3 961 --timeout 150
      bench fp8_tuned sanawm-fp8-flash3 961 --timeout 300 --inductor coordinate_descent_tuning=true
      names="$names fp8 fp8_tuned" ;;
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
  python3 -c "import json,sys; [print(f'{sys.argv[1]:>12} {r[\"frames\"]:>4} {r[\"s_per_forward\"]:.3f} s {r[\"peak_gb\"]:.1f} GB first {r[\"first_call_s\"]:.0f} s') for r in json.load(open(sys.argv[2]))]" "$f" "$OUT/$f.json" 2>/dev/null
done
