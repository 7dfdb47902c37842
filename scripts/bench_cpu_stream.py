"""Real-time streaming of the embedded model on the CPU: seconds per chunk, steady frames/s and
first-chunk latency, decode and MP4 writing included (model loading excluded).

    python scripts/bench_cpu_stream.py                         # 61 frames, steps 4 and 1, 2 threads
    python scripts/bench_cpu_stream.py --steps 4 --repeat 3    # best of 3 runs
    python scripts/bench_cpu_stream.py --compare-ref /tmp/base/src   # also an older checkout's src

Each run calls `WorldModel.stream(image, action=..., frames=N, steps=S, camera_cfg=1)` and writes
every chunk to an MP4 as it arrives. "first" is the time from the `stream` call to the first
chunk's frames being written; "chunk" the median seconds of the chunks between the first and the
last (the last is never committed to the cache; an open-ended stream commits every chunk); "fps"
their frames over their time; "CPU s/chunk" the median process CPU time of those chunks (all
threads together; with --threads 1 the measure least moved by other load).

With `--compare-ref SRC` the same measurement also runs in a fresh process whose `sanawm` comes
from SRC (e.g. `mkdir /tmp/base && git archive <commit> src | tar -x -C /tmp/base`, then
/tmp/base/src), alternating with this checkout so that both see the same machine load; the
minimum over `--repeat` runs is reported. On a shared machine, time when `uptime` shows a low
load: two threads that share their cores with other work lose far more than half their speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(frames: int, steps: int, threads: int, action: str) -> dict:
    """One streamed clip in this process; seconds of the first chunk and of each later one."""
    import torch

    from sanawm import WorldModel
    from sanawm.video import VideoWriter

    torch.set_num_threads(threads)
    wm = WorldModel.load()
    # Warm-up: a short stream, so one-time costs (allocator, kernels' first calls) are not timed.
    for _ in wm.stream(action=action, frames=min(frames, 25), steps=1, camera_cfg=1.0):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.mp4"
        times, cpu_times, counts = [], [], []
        t0, c0 = time.perf_counter(), time.process_time()
        with VideoWriter(out, wm.settings.fps) as writer:
            for chunk in wm.stream(action=action, frames=frames, steps=steps, camera_cfg=1.0):
                writer.write(chunk.frames)
                now, cpu = time.perf_counter(), time.process_time()
                times.append(now - t0)
                cpu_times.append(cpu - c0)
                counts.append(chunk.frames.shape[0])
                t0, c0 = now, cpu
    # Sustained streaming: the chunks after the first, but not the last, which is never
    # committed to the cache (an open-ended stream commits every chunk).
    later = slice(1, -1) if len(times) > 2 else slice(1, None)
    return {
        "steps": steps,
        "frames": sum(counts),
        "first_s": times[0],
        "first_frames": counts[0],
        "chunk_s": statistics.median(times[later]) if len(times) > 1 else None,
        "chunks_s": times,
        "cpu_chunk_s": statistics.median(cpu_times[later]) if len(times) > 1 else None,
        "fps": sum(counts[later]) / sum(times[later]) if len(times) > 1 else None,
        "torch": torch.__version__,
    }


def _run_child(src: str, args: argparse.Namespace, steps: int) -> dict:
    """`measure` in a fresh process that imports sanawm from `src`."""
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--child", "--frames", str(args.frames), "--steps", str(steps),
           "--threads", str(args.threads), "--action", args.action]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=61)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 1])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--action", default="w-48")
    p.add_argument("--repeat", type=int, default=1, help="runs per setting; the fastest is reported")
    p.add_argument("--compare-ref", metavar="SRC", help="also time the sanawm package found under SRC")
    p.add_argument("--json", type=Path, help="also write all runs here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.frames, args.steps[0], args.threads, args.action)))
        return 0

    here = str(Path(__file__).resolve().parents[1] / "src")
    sources = {"this": here} if args.compare_ref is None else {"ref": args.compare_ref, "this": here}
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeat):
        for steps in args.steps:
            for name, src in sources.items():  # alternate, so both see the same load
                runs.setdefault((name, steps), []).append(_run_child(src, args, steps))
    if args.json:
        rows = [{"source": n, **r} for (n, _), rs in runs.items() for r in rs]
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{'source':>6} {'steps':>5} {'first chunk s':>13} {'chunk s':>8} {'fps':>6} {'CPU s/chunk':>11}  "
          f"(best of {args.repeat}, {args.frames} frames, {args.threads} threads)")  # fmt: skip
    for (name, steps), rs in runs.items():
        first = min(r["first_s"] for r in rs)
        chunk = min(r["chunk_s"] for r in rs)
        fps = max(r["fps"] for r in rs)
        cpu = min(r["cpu_chunk_s"] for r in rs)
        print(f"{name:>6} {steps:>5} {first:>13.3f} {chunk:>8.3f} {fps:>6.1f} {cpu:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
