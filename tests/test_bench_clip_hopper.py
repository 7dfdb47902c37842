"""scripts/bench_clip_hopper.py on the CPU (--tiny): sanawm's sampler and diffusers'
SanaWMPipeline each run a clip with CFG, camera and VAE decode in their own process, and the
driver merges their records into the JSON file without dropping the records already there."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_clip_hopper.py"


def test_tiny_clip_run_merges_records_and_prints_the_table_last(tmp_path):
    out = tmp_path / "hopper.json"
    kept = {"impl": "sanawm-eager", "precision": "bf16", "mode": "forward", "frames": 81, "s_per_forward": 0.29}
    stale = {"impl": "diffusers", "precision": "fp32", "mode": "clip", "frames": 9, "s_per_clip_extrapolated": -1}
    out.write_text(json.dumps([kept, stale]))
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--impls", "sanawm-eager", "diffusers", "--frames", "9",
           "--steps", "2", "--clip-steps", "10", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(out.read_text())
    assert records[0] == kept and stale not in records
    clips = {r["impl"]: r for r in records if r["mode"] == "clip"}
    assert set(clips) == {"sanawm-eager", "diffusers"}
    for r in clips.values():
        assert (r["precision"], r["frames"], r["gpu"], r["peak_gb"], r["measured_steps"]) == ("fp32", 9, "cpu", None, 2)
        assert len(r["step_s"]) == 2 and r["s_per_step"] > 0 and r["decode_s"] > 0
        want = r["prepare_s"] + 10 * r["s_per_step"] + r["decode_s"]
        assert abs(r["s_per_clip_extrapolated"] - want) < 1e-9 * want
    assert clips["diffusers"]["diffusers_version"] == "0.42.1"
    assert "diffusers" in proc.stdout.splitlines()[-1]  # the table comes last
