"""scripts/bench_hopper.py on the CPU (tiny preset): the driver runs a worker process and
writes the records the benchmark README and hopper.json rely on (structure, not speed)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_hopper.py"


def test_tiny_run_writes_one_record_per_frame_count(tmp_path):
    out = tmp_path / "hopper.json"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--impls", "sanawm-eager", "--frames", "9", "17",
           "--iters", "1", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads(out.read_text())
    assert [r["frames"] for r in records] == [9, 17]
    for r in records:
        assert {"impl", "precision", "mode", "frames", "s_per_forward", "peak_gb", "gpu"} <= set(r)
        assert (r["impl"], r["precision"], r["mode"], r["gpu"], r["peak_gb"]) == (
            "sanawm-eager", "fp32", "forward", "cpu", None)  # fmt: skip
        assert r["s_per_forward"] > 0
    assert "sanawm-eager" in proc.stdout.splitlines()[-1]  # the table comes last


def test_inductor_options_parse_and_name_the_records():
    """--inductor KEY=VALUE: booleans and integers typed as torch.compile wants them; a run with
    options is recorded under its own impl name ("<impl>-tuned" for `--compile tuned`'s options, the
    options themselves otherwise) so it sits beside the default run in hopper.json."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_hopper", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(inductor=["coordinate_descent_tuning=true", "max_fusion_size=64", "x=a"], tiny=False)
    assert bench.inductor_options(args) == {"coordinate_descent_tuning": True, "max_fusion_size": 64, "x": "a"}
    assert bench.inductor_options(argparse.Namespace(inductor=[], tiny=False)) is None
    cpu = bench.torch.device("cpu")
    rec = bench.record("sanawm-flash4", 961, {"s_per_forward": 1.0, "peak_gb": 1.0}, cpu, "-tuned")
    assert rec["impl"] == "sanawm-flash4-tuned" and rec["precision"] == "fp32"
    assert bench.inductor_suffix(None) == ""
    assert bench.inductor_suffix({"coordinate_descent_tuning": True}) == "-tuned"
    # another option is not "tuned": multi-kernel reductions once took the tuned run's record
    assert bench.inductor_suffix({"triton.multi_kernel": 1}) == "-multi_kernel=1"
    assert bench.inductor_suffix({"coordinate_descent_tuning": True, "max_fusion_size": 64}) == (
        "-coordinate_descent_tuning=true+max_fusion_size=64")


def test_fp8_families_option_names_the_set_and_refuses_unknown_names():
    """--fp8-families: convert_to_fp8's default set keeps the plain impl name (records comparable
    with earlier runs); every family, or a hand-picked list, gets its own suffix so an A/B of two
    sets in one hopper.json keeps both."""
    import importlib.util

    import pytest

    from sanawm.ops.fp8 import DEFAULT_FP8_FAMILIES, FP8_FAMILIES

    spec = importlib.util.spec_from_file_location("bench_hopper", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.fp8_families("default") == (DEFAULT_FP8_FAMILIES, "")
    assert bench.fp8_families("+".join(reversed(DEFAULT_FP8_FAMILIES)))[1] == ""  # the same set, any order
    assert bench.fp8_families("all") == (tuple(FP8_FAMILIES), "-fp8all")
    assert bench.fp8_families("attention qkv+temporal conv") == (("attention qkv", "temporal conv"), "-fp8custom")
    with pytest.raises(ValueError, match="unknown FP8 families"):
        bench.fp8_families("attention qkv+bogus")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--fp8-families", "bogus"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "unknown FP8 families ['bogus']" in proc.stderr
