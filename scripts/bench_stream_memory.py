"""Peak resident memory of `sanawm generate --mode streaming` (embedded model, CPU) vs clip length.

Each length runs in a fresh Python process through the real command (sampling, the causal chunk
decoder and the progressive MP4 writer); the process reports its own peak RSS (`ru_maxrss`).
The number of sampling steps does not change what is held between chunks, so a few steps keep
the run short. With the default attention window the peak should not grow with the length; with
`--window full` the softmax K/V cache grows with every chunk.

    python scripts/bench_stream_memory.py                       # 301 and 1201 frames, 1 step
    python scripts/bench_stream_memory.py --frames 301 1201 --window full
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Walk, turn, walk back, turn: 300 frames, repeated as often as needed.
MOTION = "w-100,l-50,s-100,j-50"


def measure(frames: int, steps: int, window: str | None, out_dir: Path) -> dict:
    action = ",".join([MOTION] * (frames // 300 + 1))
    argv = ["generate", "--mode", "streaming", "--action", action, "--frames", str(frames), "--steps", str(steps),
            "--device", "cpu", "--out", str(out_dir / f"clip_{frames}.mp4")]  # fmt: skip
    if window is not None:
        argv += ["--window", window]
    t0 = time.perf_counter()
    # `sanawm generate` in a fresh process; wait4 gives that one process's peak resident memory.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "sanawm", *argv], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"generate failed for {frames} frames:\n{err.read().decode()[-2000:]}")
    kb = usage.ru_maxrss
    return {"frames": frames, "steps": steps, "window": window or "default", "peak_rss_mb": kb / 1024,
            "seconds": seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[301, 1201])
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--window", help="--window of generate (default: the model's default window)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(f, args.steps, args.window, Path(tmp)) for f in args.frames]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{'frames':>7} {'window':>8} {'steps':>5} {'peak RSS MB':>12} {'ratio':>6} {'seconds':>8}")
    for row in rows:
        ratio = row["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        print(f"{row['frames']:>7} {row['window']:>8} {row['steps']:>5} {row['peak_rss_mb']:>12.1f} {ratio:>6.3f}"
              f" {row['seconds']:>8.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
