"""Long-horizon streaming quality of the embedded model, with and without the attention window.

For each trajectory (a closed loop walked round and round, and a figure-8, both in a held-out
procedural world, so ground truth exists and every lap revisits the same poses), this script
renders the ground truth, then streams the whole clip with `WorldModel.stream` from the ground
truth's frame 0 for each window configuration, and scores, chunk by chunk as frames arrive:

* PSNR / SSIM of every frame to the ground truth, summarised per minute (and per 10 s for the
  plots);
* revisit consistency: PSNR between the two generated frames of each revisit pair (poses at
  most 0.15 m / 10 deg apart, at least 10 s between them; `sanawm.evaluation.consistency`),
  next to the same PSNR on the ground truth (the pair's own floor, poses are not identical);
* Delta-IQ: sharpness (variance of the Laplacian, a no-reference detail measure) and PSNR,
  mean over the first minus the last 10 s window (positive = got worse);
* throughput and peak CUDA memory of each run.

Every configuration runs in its own process (on a GPU they run side by side: the embedded
model is too small to fill it). Each run saves 33-frame windows starting at every minute mark
(frames.npz) so that camera error over time can be scored afterwards on a CPU
(`--camera-from DIR`, the OpenCV pose backend, as scripts/eval_embedded.py does).

    python scripts/eval_long_horizon.py --out results/long --device cuda           # 5 minutes
    python scripts/eval_long_horizon.py --out /tmp/lh --frames 97 --steps 2 --device cpu \
        --configs full,1 --trajectories loop                                        # a smoke test
    python scripts/eval_long_horizon.py --out results/long --camera-from results/long  # camera error

Outputs under --out: report.json, report.md, psnr_over_time.png, revisits.png,
<trajectory>_<config>.frames.npz (the minute windows), run_<trajectory>_<config>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sanawm.camera import Trajectory, default_intrinsics
from sanawm.evaluation.consistency import RevisitConfig, find_revisit_pairs, window_frames, window_trend
from sanawm.evaluation.image_metrics import psnr, sharpness, ssim
from sanawm.pipeline import WorldModel
from sanawm.train.data import HELD_OUT_SEED_BASE
from sanawm.worlds import make_world, render
from sanawm.worlds.trajectories import DEFAULT_MARGIN, look_at_c2w, loop_trajectory, trajectory_clearance

WORLD_SEED = HELD_OUT_SEED_BASE + 7000  # held out from training; one world for every run
WORLD_KIND = "terrain"  # open ground: a loop and a figure-8 of a few metres fit
SPEED = 0.05  # metres per frame, the action language's walking speed
WINDOW_SEC = 10.0  # Delta-IQ windows (SANA-WM's)
CAMERA_WINDOW = 33  # frames per saved window for camera error
REVISITS = RevisitConfig(max_distance=0.15, max_angle_deg=10.0, min_gap_sec=10.0, max_pairs=48)


# ---------------------------------------------------------------------------------------------
# Trajectories
# ---------------------------------------------------------------------------------------------


def figure_eight(world, num_frames: int, seed: int, speed: float = SPEED, look_ahead: float = 0.8) -> torch.Tensor:
    """A figure-8 (lemniscate) through the origin, walked at `speed` m/frame lap after lap,
    facing along the path; shrunk until it keeps DEFAULT_MARGIN from every surface."""
    rng = np.random.default_rng([seed, 8])
    yaw = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]])
    t = np.linspace(0, 2 * math.pi, 2000, endpoint=False)
    for size in (4.0, 3.0, 2.2, 1.6, 1.2, 0.9, 0.7):
        curve = np.stack([size * np.sin(t), np.zeros_like(t), size * np.sin(t) * np.cos(t)], axis=-1) @ rot.T
        closed = np.concatenate([curve, curve[:1]])
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
        s = np.arange(num_frames) * speed
        positions = _at(closed, arc, np.mod(s, arc[-1]))
        targets = _at(closed, arc, np.mod(s + look_ahead, arc[-1]))
        c2w = look_at_c2w(positions, targets)
        inside = bool(world.in_bounds(c2w[:, :3, 3], DEFAULT_MARGIN).all())
        if inside and trajectory_clearance(world, c2w) >= DEFAULT_MARGIN:
            return c2w
    raise RuntimeError("no figure-8 fits in this world")


def _at(curve: np.ndarray, arc: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(s, arc, curve[:, i]) for i in range(3)], axis=-1)


def make_trajectory(name: str, world, frames: int) -> torch.Tensor:
    if name == "loop":
        # A lap of about 12 m: the camera goes round ~20 times in 5 minutes.
        lap = min(frames, 241)
        one = loop_trajectory(world, lap, seed=1, speed=SPEED)
        reps = math.ceil(frames / (lap - 1))
        return torch.cat([one[:-1]] * reps + [one[:1]])[:frames]
    if name == "figure8":
        return figure_eight(world, frames, seed=2)
    raise SystemExit(f"unknown trajectory {name!r}")


# ---------------------------------------------------------------------------------------------
# One run (in its own process)
# ---------------------------------------------------------------------------------------------


def run_config(job: dict) -> dict:
    """Stream one clip with one window setting and score it against the ground truth."""
    torch.set_num_threads(job["threads"])
    truth = np.load(job["truth"], mmap_mode="r")
    c2w = torch.from_numpy(np.load(job["c2w"]))
    frames_total = len(c2w)
    model = WorldModel.load(job["model"], device=job["device"])
    size = model.image_size
    k = default_intrinsics(size, model.settings.fov_deg).expand(frames_total, 4)
    window = job["window"]
    session = model.stream(
        truth[0], trajectory=Trajectory(c2w, k, size), steps=job["steps"], seed=job["seed"],
        context_sigma=job["context_sigma"],
        window="full" if window == "full" else int(window),
    )  # fmt: skip
    keep = set(job["keep_frames"])
    kept: dict[int, np.ndarray] = {}
    psnr_all, ssim_all, sharp_all = [], [], []
    if job["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    done = 0
    timed_out = False
    for chunk in session:
        n = chunk.frames.shape[0]
        gt = np.asarray(truth[chunk.start : chunk.start + n])
        psnr_all.append(psnr(chunk.frames, gt).numpy())
        ssim_all.append(ssim(chunk.frames, gt).numpy())
        sharp_all.append(sharpness(chunk.frames).numpy())
        for i in range(chunk.start, chunk.start + n):
            if i in keep:
                kept[i] = chunk.frames[i - chunk.start].copy()
        done = chunk.start + n
        if time.perf_counter() - t0 > job["deadline_s"]:
            timed_out = done < frames_total
            session.close()
            break
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 1e9 if job["device"].startswith("cuda") else None
    revisits = []
    for a, b in job["pairs"]:
        if a in kept and b in kept:
            revisits.append({
                "frame_a": a, "frame_b": b,
                "psnr": float(psnr(kept[a][None], kept[b][None])[0]),
                "psnr_truth": float(psnr(np.asarray(truth[a])[None], np.asarray(truth[b])[None])[0]),
            })  # fmt: skip
    windows = {str(s): np.stack([kept[i] for i in range(s, s + CAMERA_WINDOW)]) for s in job["camera_starts"]
               if all(i in kept for i in range(s, s + CAMERA_WINDOW))}  # fmt: skip
    np.savez_compressed(job["frames_out"], **windows)
    result = {
        "trajectory": job["trajectory"], "window": window, "frames_done": done, "frames_total": frames_total,
        "timed_out": timed_out, "seconds": seconds, "frames_per_second": done / seconds, "peak_memory_gb": peak,
        "psnr": np.concatenate(psnr_all).tolist(), "ssim": np.concatenate(ssim_all).tolist(),
        "sharpness": np.concatenate(sharp_all).tolist(), "revisits": revisits,
    }  # fmt: skip
    Path(job["result_out"]).write_text(json.dumps(result))
    return result


# ---------------------------------------------------------------------------------------------
# Summaries and plots
# ---------------------------------------------------------------------------------------------


def summarise(run: dict, fps: float) -> dict:
    p, s, sharp = (np.asarray(run[k]) for k in ("psnr", "ssim", "sharpness"))
    minute = int(round(60 * fps))
    body = slice(1, None)  # frame 0 is the input image
    per_minute = [
        {"minute": m, "psnr": float(p[body][m * minute : (m + 1) * minute].mean()),
         "ssim": float(s[body][m * minute : (m + 1) * minute].mean())}
        for m in range(math.ceil((len(p) - 1) / minute))
    ]  # fmt: skip
    win = window_frames(len(p) - 1, fps, WINDOW_SEC)
    rev = run["revisits"]
    return {
        "trajectory": run["trajectory"], "window": run["window"], "frames": run["frames_done"],
        "timed_out": run["timed_out"], "seconds": run["seconds"], "peak_memory_gb": run["peak_memory_gb"],
        "psnr_mean": float(p[body].mean()), "ssim_mean": float(s[body].mean()), "per_minute": per_minute,
        "delta_sharpness": window_trend(sharp[body], win), "delta_psnr": window_trend(p[body], win),
        "revisit_pairs": len(rev),
        "revisit_psnr": float(np.mean([r["psnr"] for r in rev])) if rev else None,
        "revisit_psnr_truth": float(np.mean([r["psnr_truth"] for r in rev])) if rev else None,
    }  # fmt: skip


def plot(runs: list[dict], fps: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trajectories = sorted({r["trajectory"] for r in runs})
    fig, axes = plt.subplots(1, len(trajectories), figsize=(6 * len(trajectories), 4), squeeze=False)
    step = int(round(10 * fps))
    for ax, name in zip(axes[0], trajectories):
        for r in (r for r in runs if r["trajectory"] == name):
            p = np.asarray(r["psnr"])[1:]
            means = [p[i : i + step].mean() for i in range(0, len(p), step)]
            ax.plot((np.arange(len(means)) + 0.5) * 10 / 60, means, label=f"window {r['window']}")
        ax.set(title=f"{name}: PSNR to ground truth (10 s means)", xlabel="minutes", ylabel="PSNR (dB)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "psnr_over_time.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(trajectories), figsize=(6 * len(trajectories), 4), squeeze=False)
    for ax, name in zip(axes[0], trajectories):
        for r in (r for r in runs if r["trajectory"] == name):
            if r["revisits"]:
                ax.plot([x["frame_b"] / fps / 60 for x in r["revisits"]], [x["psnr"] for x in r["revisits"]],
                        "o-", ms=3, label=f"window {r['window']}")  # fmt: skip
        truth = next((r["revisits"] for r in runs if r["trajectory"] == name and r["revisits"]), [])
        if truth:
            ax.plot([x["frame_b"] / fps / 60 for x in truth], [x["psnr_truth"] for x in truth], "k--", lw=1,
                    label="ground truth pairs")  # fmt: skip
        ax.set(title=f"{name}: revisit PSNR (later vs earlier visit)", xlabel="minutes (later visit)",
               ylabel="PSNR (dB)")  # fmt: skip
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "revisits.png", dpi=100)
    plt.close(fig)


def report_md(summaries: list[dict], meta: dict) -> str:
    lines = [
        f"# Long-horizon streaming quality ({meta.get('model', 'embedded')} model)", "",
        f"{meta['frames']} frames ({meta['frames'] / meta['fps'] / 60:.1f} min at {meta['fps']:g} fps), "
        f"{meta['steps']} sampling steps, camera guidance {meta['camera_cfg']}, "
        f"context noise {meta.get('context_sigma', 0.0):g}, world {meta['world']}, "
        f"device {meta['device']}. Window = recent chunks of softmax K/V kept besides the first-chunk sink "
        "('full' = every chunk).", "",
        "| trajectory | window | PSNR | SSIM | PSNR per minute | SSIM per minute | revisit PSNR (truth) | pairs | "
        "ΔPSNR first-last 10 s | Δsharpness first-last 10 s | peak GB | gen fps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for s in summaries:
        minutes = " / ".join(f"{m['psnr']:.1f}" for m in s["per_minute"])
        minutes_ssim = " / ".join(f"{m['ssim']:.3f}" for m in s["per_minute"])
        rev = "n/a" if s["revisit_psnr"] is None else f"{s['revisit_psnr']:.2f} ({s['revisit_psnr_truth']:.2f})"
        peak = "n/a" if s["peak_memory_gb"] is None else f"{s['peak_memory_gb']:.2f}"
        cut = " (stopped early)" if s["timed_out"] else ""
        lines.append(
            f"| {s['trajectory']} | {s['window']}{cut} | {s['psnr_mean']:.2f} | {s['ssim_mean']:.3f} | {minutes} | {minutes_ssim} "
            f"| {rev} | {s['revisit_pairs']} | {s['delta_psnr']['degradation']:.2f} "
            f"| {s['delta_sharpness']['degradation']:.1f} | "
            f"{peak} | {s['frames'] / s['seconds']:.1f} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_from_table(log: Path, out: Path) -> None:
    """Per-minute PSNR and revisit PSNR per run, read back from the report table in a log
    (for runs whose per-frame files were not kept)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = log.read_text().splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| trajectory")).split("|")[1:-1]]
    col_minutes, col_revisit = header.index("PSNR per minute"), header.index("revisit PSNR (truth)")
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and not line.startswith("| trajectory")]
    trajectories = sorted({r[0].strip() for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for n, name in enumerate(trajectories):
        for r in (r for r in rows if r[0].strip() == name):
            minutes = [float(v) for v in r[col_minutes].split("/")]
            axes[0].plot(np.arange(len(minutes)) + 0.5, minutes, "o-" if n == 0 else "s--",
                         label=f"{name}, window {r[1].split('(')[0].strip()}")  # fmt: skip
    axes[0].set(title="PSNR to ground truth, per minute", xlabel="minute", ylabel="PSNR (dB)")
    axes[0].legend(fontsize=8)
    labels = [f"{r[0].strip()}\n{r[1].split('(')[0].strip()}" for r in rows]
    axes[1].bar(range(len(rows)), [float(r[col_revisit].split("(")[0]) for r in rows])
    axes[1].set_xticks(range(len(rows)), labels, fontsize=8)
    axes[1].set(title="revisit PSNR (later vs first visit of the same pose)", ylabel="PSNR (dB)")
    fig.tight_layout()
    fig.savefig(out / "long_horizon.png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Camera error from the saved windows (CPU, afterwards)
# ---------------------------------------------------------------------------------------------


def camera_error_over_time(directory: Path) -> dict:
    from sanawm.evaluation import PoseEstimationConfig, camera_errors, estimate_poses_with_backend

    meta = json.loads((directory / "report.json").read_text())["meta"]
    size = tuple(meta["image_size"])
    k = default_intrinsics(size, meta["fov_deg"]).numpy()
    world = make_world(WORLD_SEED, WORLD_KIND)

    def score(frames: np.ndarray, c2w: np.ndarray, s: int) -> dict:
        row = {"start_frame": s, "minute": s / meta["fps"] / 60}
        try:
            est, _ = estimate_poses_with_backend(frames, np.broadcast_to(k, (len(frames), 4)),
                                                 PoseEstimationConfig(backend="opencv"))  # fmt: skip
            err = camera_errors(est, c2w)
        except Exception as exc:  # a failed estimate is reported, not hidden
            return {**row, "error": str(exc)}
        return {**row, "rot_err_deg": float(err.rot_err_deg.mean()), "trans_err": float(err.trans_err.mean()),
                "cam_mc": float(err.cammc.mean())}  # fmt: skip

    out = {}
    for path in sorted(directory.glob("*.frames.npz")):
        name = path.name.removesuffix(".frames.npz")
        c2w = np.load(directory / f"{name.split('_')[0]}.c2w.npy")
        with np.load(path) as windows:
            out[name] = [score(windows[s], c2w[int(s) : int(s) + len(windows[s])], int(s))
                         for s in sorted(windows.files, key=int)]  # fmt: skip
    # The estimator's own error: the same windows rendered from the ground truth.
    minute = int(round(60 * meta["fps"]))
    for path in sorted(directory.glob("*.c2w.npy")):
        c2w = np.load(path)
        rows = []
        for s in range(0, len(c2w) - CAMERA_WINDOW + 1, minute):
            pose = torch.from_numpy(c2w[s : s + CAMERA_WINDOW])
            with torch.no_grad():
                gt = render(world, pose, torch.from_numpy(k).expand(CAMERA_WINDOW, 4), size)
            rows.append(score(gt.numpy(), c2w[s : s + CAMERA_WINDOW], s))
        out[f"{path.name.removesuffix('.c2w.npy')}_truth"] = rows
    return out


# ---------------------------------------------------------------------------------------------


def print_camera_errors(result: dict) -> None:
    for name, rows in result.items():
        cells = ["%.1f min: %s" % (r["minute"], "failed" if "error" in r else f"RotErr {r['rot_err_deg']:.2f}, "
                 f"TransErr {r['trans_err']:.3f}") for r in rows]  # fmt: skip
        print(f"camera error {name}: " + "; ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", help="model folder or bundled name (default: the embedded model)")
    p.add_argument("--frames", type=int, default=4801, help="frames per clip (default 4801: 5 min at 16 fps)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--context-sigma", type=float, help="noise level of committed chunks (default: the model's)")
    p.add_argument("--configs", default="full,1,4", help="comma-separated windows ('full' or chunks)")
    p.add_argument("--trajectories", default="loop,figure8")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--deadline-s", type=float, default=1e9, help="stop each run after this long (reported)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per run")
    p.add_argument("--no-camera", action="store_true", help="skip scoring camera error after the runs")
    p.add_argument("--camera-from", type=Path, help="only score camera error from an earlier --out folder")
    p.add_argument("--plot-from-log", type=Path, help="only plot the report table of a log into --out")
    args = p.parse_args(argv)

    if args.plot_from_log is not None:
        plot_from_table(args.plot_from_log, args.out)
        return 0

    if args.camera_from is not None:
        result = camera_error_over_time(args.camera_from)
        (args.camera_from / "camera_error.json").write_text(json.dumps(result, indent=1))
        print_camera_errors(result)
        return 0

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = WorldModel.load(args.model, device="cpu")
    s = model.settings
    size = model.image_size
    fps = s.fps
    world = make_world(WORLD_SEED, WORLD_KIND)
    configs = args.configs.split(",")
    jobs = []
    t0 = time.perf_counter()
    for name in args.trajectories.split(","):
        c2w = make_trajectory(name, world, args.frames)
        np.save(out / f"{name}.c2w.npy", c2w.numpy())
        k = default_intrinsics(size, s.fov_deg).expand(len(c2w), 4)
        device = args.device
        with torch.no_grad():
            truth = np.concatenate([
                render(world.to(device), c2w[i : i + 600].to(device), k[i : i + 600].to(device), size).cpu().numpy()
                for i in range(0, len(c2w), 600)
            ])  # fmt: skip
        truth_path = out / f".{name}.truth.npy"
        np.save(truth_path, truth)
        pairs = [(p.frame_a, p.frame_b) for p in find_revisit_pairs(c2w, fps, REVISITS)]
        minute = int(round(60 * fps))
        camera_starts = [m for m in range(0, args.frames - CAMERA_WINDOW + 1, minute)]
        keep = sorted({f for ab in pairs for f in ab} | {i for c in camera_starts for i in range(c, c + CAMERA_WINDOW)})
        for window in configs:
            jobs.append({
                "trajectory": name, "window": window, "truth": str(truth_path), "c2w": str(out / f"{name}.c2w.npy"),
                "model": args.model, "device": args.device, "steps": args.steps, "seed": 0, "deadline_s": args.deadline_s,
                "context_sigma": args.context_sigma,
                "threads": args.threads, "keep_frames": keep, "pairs": pairs, "camera_starts": camera_starts,
                "frames_out": str(out / f"{name}_{window}.frames.npz"),
                "result_out": str(out / f"run_{name}_{window}.json"),
            })  # fmt: skip
    print(f"ground truth rendered in {time.perf_counter() - t0:.1f} s; {len(jobs)} runs", flush=True)

    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        runs = pool.map(run_config, jobs)
    for job in jobs:
        Path(job["truth"]).unlink(missing_ok=True)
    summaries = [summarise(r, fps) for r in runs]
    meta = {
        "model": args.model or "embedded", "frames": args.frames, "fps": fps, "steps": args.steps or s.steps,
        "context_sigma": s.context_sigma if args.context_sigma is None else args.context_sigma,
        "camera_cfg": s.camera_cfg,
        "world": f"{WORLD_KIND} seed {WORLD_SEED}", "device": args.device, "image_size": list(size),
        "fov_deg": s.fov_deg, "configs": configs, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }  # fmt: skip
    (out / "report.json").write_text(json.dumps({"meta": meta, "summaries": summaries}, indent=1))
    (out / "report.md").write_text(report_md(summaries, meta))
    plot(runs, fps, out)
    print(report_md(summaries, meta), flush=True)
    if not args.no_camera:
        camera = camera_error_over_time(out)
        (out / "camera_error.json").write_text(json.dumps(camera, indent=1))
        print_camera_errors(camera)
    return 0


if __name__ == "__main__":
    sys.exit(main())
