"""Does a model stream in real time on this CPU? Seconds per chunk, steady frames/s and
first-chunk latency, decode and MP4 writing included (model loading excluded).

    python scripts/bench_cpu_stream.py --steps 4 1                     # embedded model, 4 and 1 steps
    python scripts/bench_cpu_stream.py --steps 4 --repeat 3 --compare-ref /tmp/base/src   # vs an older src
    python scripts/bench_cpu_stream.py --model embedded-fast           # a few-step student, its own steps
    python scripts/bench_cpu_stream.py --model embedded-fast --timesteps default --timesteps 1000 764

Each run (a row setting) happens in a fresh process: it loads the model (`--model`, default the
bundled embedded one), streams a short untimed clip with the same settings, then calls
`WorldModel.stream(image, action=..., frames=N)` and writes every chunk to an MP4 as it
arrives. Camera guidance is off (camera_cfg=1) unless --keep-guidance. Rows: every `--steps`
value (none given: the model's own), or every `--timesteps` list of a few-step student
("default": the model's own timesteps).

"first s" is the time from the `stream` call to the first chunk's frames being written; "chunk
s" the median seconds of the chunks between the first and the last (the last is never
committed to the cache; an open-ended stream commits every chunk); "fps" their frames over their
time, "real time" whether that reaches the model's frame rate; "CPU s/chunk" the median process
CPU time of those chunks (all threads together; with --threads 1 the measure least moved by
other load). The best of `--repeat` runs is reported.

With `--compare-ref SRC` every setting also runs in a process whose `sanawm` comes from SRC (e.g.
`mkdir /tmp/base && git archive <commit> src | tar -x -C /tmp/base`, then /tmp/base/src),
alternating with this checkout so that both see the same machine load. On a shared machine,
time when `uptime` shows a low load: two threads that share their cores with other work lose
far more than half their speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(model: str, frames: int, steps: int | None, timesteps: list[float] | None, threads: int, action: str,
            keep_guidance: bool) -> dict:  # fmt: skip
    """One streamed clip in this process; seconds of the first chunk and of each later one."""
    import torch

    from sanawm import WorldModel
    from sanawm.video import VideoWriter

    torch.set_num_threads(threads)
    wm = WorldModel.load(model, device="cpu")
    if timesteps:
        wm.settings = dataclasses.replace(wm.settings, timesteps=tuple(timesteps), steps=len(timesteps))
    camera_cfg = None if keep_guidance else 1.0
    # Warm-up: a short stream, so one-time costs (allocator, kernels' first calls) are not timed.
    for _ in wm.stream(action=action, frames=min(frames, 25), steps=steps, camera_cfg=camera_cfg):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        times, cpu_times, counts = [], [], []
        t0, c0 = time.perf_counter(), time.process_time()
        with VideoWriter(Path(tmp) / "clip.mp4", wm.settings.fps) as writer:
            for chunk in wm.stream(action=action, frames=frames, steps=steps, camera_cfg=camera_cfg):
                writer.write(chunk.frames)
                now, cpu = time.perf_counter(), time.process_time()
                times.append(now - t0)
                cpu_times.append(cpu - c0)
                counts.append(chunk.frames.shape[0])
                t0, c0 = now, cpu
    later = slice(1, -1) if len(times) > 2 else slice(1, None)
    sustained = len(times) > 1
    return {
        "model": model, "steps": steps or wm.settings.steps, "timesteps": list(wm.settings.timesteps),
        "threads": threads, "video_fps": wm.settings.fps, "frames": sum(counts), "first_s": times[0],
        "first_frames": counts[0], "chunk_s": statistics.median(times[later]) if sustained else None,
        "chunks_s": times, "cpu_chunk_s": statistics.median(cpu_times[later]) if sustained else None,
        "fps": sum(counts[later]) / sum(times[later]) if sustained else None, "torch": torch.__version__,
    }  # fmt: skip


def _run_child(src: str, args: argparse.Namespace, steps: int | None, timesteps: list[str] | None) -> dict:
    """`measure` in a fresh process that imports sanawm from `src`."""
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--frames", str(args.frames),
           "--threads", str(args.threads), "--action", args.action]  # fmt: skip
    cmd += ["--steps", str(steps)] if steps is not None else []
    cmd += ["--timesteps", *timesteps] if timesteps else []
    cmd += ["--keep-guidance"] if args.keep_guidance else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(cmd[2:])}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model folder or bundled name (default embedded)")
    p.add_argument("--steps", type=int, nargs="+", help="sampling steps, one row each (default: the model's)")
    p.add_argument("--timesteps", action="append", nargs="+", metavar="T",
                   help="few-step timesteps of a student ('default': the model's); repeat for several rows")  # fmt: skip
    p.add_argument("--keep-guidance", action="store_true", help="keep the model's camera guidance")
    p.add_argument("--frames", type=int, default=61, help="frames per run (default 61: 5 chunks)")
    p.add_argument("--action", default="w-48")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="runs per setting; the best is reported")
    p.add_argument("--compare-ref", metavar="SRC", help="also time the sanawm package found under SRC")
    p.add_argument("--json", type=Path, help="also write all runs here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps and args.timesteps:
        p.error("give --steps or --timesteps, not both")
    if args.child:
        ts = [float(t) for t in args.timesteps[0]] if args.timesteps and args.timesteps[0] != ["default"] else None
        steps = args.steps[0] if args.steps else None
        print(json.dumps(measure(args.model, args.frames, steps, ts, args.threads, args.action, args.keep_guidance)))
        return 0

    here = str(Path(__file__).resolve().parents[1] / "src")
    sources = {"this": here} if args.compare_ref is None else {"ref": args.compare_ref, "this": here}
    settings = [(None, spec) for spec in args.timesteps] if args.timesteps else [(s, None) for s in args.steps or [None]]
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeat):
        for i, (steps, timesteps) in enumerate(settings):
            for name, src in sources.items():  # alternate, so both see the same load
                runs.setdefault((name, i), []).append(_run_child(src, args, steps, timesteps))
    if args.json:
        rows = [{"source": n, **r} for (n, _), rs in runs.items() for r in rs]
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\n{'source':>6} {'model':<14} {'steps':>5} {'timesteps':<22} {'first s':>8} {'chunk s':>8} {'fps':>6} "
          f"{'real time':>9} {'CPU s/chunk':>11}  (best of {args.repeat}, {args.frames} frames, "
          f"{args.threads} threads)")  # fmt: skip
    for (name, _), rs in runs.items():
        r = rs[0]
        first = min(x["first_s"] for x in rs)
        chunk = min(x["chunk_s"] for x in rs)
        fps = max(x["fps"] for x in rs)
        cpu = min(x["cpu_chunk_s"] for x in rs)
        ts = " ".join(f"{t:g}" for t in r["timesteps"]) or "-"
        print(f"{name:>6} {r['model']:<14} {r['steps']:>5} {ts:<22} {first:>8.3f} {chunk:>8.3f} {fps:>6.1f} "
              f"{'yes' if fps >= r['video_fps'] else 'no':>9} {cpu:>11.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
