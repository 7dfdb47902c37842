"""Training clips: procedural worlds rendered on the fly, or a folder of real clips.

Both sources are *indexable by draw number*: `source.prepare(draw)` returns the CPU part of
clip number `draw` (any non-negative integer), and everything random about it (world, path,
field of view, crop, frame window) is a function of (seed, draw). A training run consumes
draws in order, so its data position is a single integer, which makes resuming exact and lets
DataLoader workers prepare clips in parallel. `source.finish(items, device)` turns prepared
items into a `ClipBatch` on the device (for procedural clips this is where the ray tracing
runs, batched over frames, on the GPU when there is one).

Clip layout: `video` (B, F, H, W, 3) uint8; `c2w` (B, F, 4, 4) and `intrinsics` (B, F, 4)
float32 in the sanawm camera convention, intrinsics in pixels of (H, W); optional text
(precomputed encoder states from `NAME.text.safetensors` sidecars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sanawm.camera import ResizeCrop, Trajectory, camera_path_for, default_intrinsics, load_trajectory
from sanawm.errors import UserInputError
from sanawm.train.config import DataConfig, FolderConfig, ProceduralConfig
from sanawm.vae.base import VideoVAE

# World seeds of training clips lie below this; held-out (evaluation) worlds at or above it,
# so a held-out scene is never trained on.
HELD_OUT_SEED_BASE = 2**31
BASE_TRANSLATION_SPEED = 0.05  # metres per frame (the action language's default)
BASE_ROTATION_SPEED_DEG = 1.2
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
TEXT_SIDECAR = ".text.safetensors"


@dataclass
class Clip:
    """One prepared clip, on the CPU (a procedural clip's video is None until it is rendered,
    then on the render device)."""

    c2w: torch.Tensor
    """(F, 4, 4) float32 camera-to-world poses."""
    intrinsics: torch.Tensor
    """(F, 4) float32 [fx, fy, cx, cy] in pixels of the training size."""
    video: torch.Tensor | None = None
    """(F, H, W, 3) uint8 RGB."""
    world: object | None = None
    """The `sanawm.worlds.World` to render (procedural clips)."""
    text_states: torch.Tensor | None = None
    """(L, C) precomputed text-encoder states, if the clip has a caption."""
    text_mask: torch.Tensor | None = None
    """(L,) 1 = token, 0 = padding."""


@dataclass
class ClipBatch:
    """A batch of clips on one device (see module doc)."""

    video: torch.Tensor
    c2w: torch.Tensor
    intrinsics: torch.Tensor
    text_states: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    text_present: torch.Tensor | None = None
    """(B,) bool: which clips have a caption (the others get the null text)."""

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.video.shape[2]), int(self.video.shape[3])

    def pixels(self) -> torch.Tensor:
        """(B, 3, F, H, W) float32 in [-1, 1], the VAE's input."""
        return VideoVAE.preprocess(self.video)


def _draw_rng(seed: int, draw: int, stream: int) -> np.random.Generator:
    if draw < 0:
        raise UserInputError(f"draw numbers are non-negative, got {draw}")
    return np.random.default_rng([int(seed), int(stream), int(draw)])


def _collate(clips: list[Clip], device: torch.device) -> ClipBatch:
    video = torch.stack([c.video for c in clips]).to(device)
    c2w = torch.stack([c.c2w for c in clips]).to(device)
    intrinsics = torch.stack([c.intrinsics for c in clips]).to(device)
    with_text = [c for c in clips if c.text_states is not None]
    if not with_text:
        return ClipBatch(video, c2w, intrinsics)
    length = max(c.text_states.shape[0] for c in with_text)
    width = with_text[0].text_states.shape[1]
    states = torch.zeros(len(clips), length, width)
    mask = torch.zeros(len(clips), length, dtype=torch.long)
    present = torch.zeros(len(clips), dtype=torch.bool)
    for i, c in enumerate(clips):
        if c.text_states is None:
            continue
        if c.text_states.shape[1] != width:
            raise UserInputError(f"text sidecars disagree on the state width ({c.text_states.shape[1]} vs {width})")
        n = c.text_states.shape[0]
        states[i, :n] = c.text_states.float()
        mask[i, :n] = c.text_mask
        present[i] = True
    return ClipBatch(video, c2w, intrinsics, states.to(device), mask.to(device), present.to(device))


# ---------------------------------------------------------------------------------------------
# Procedural worlds
# ---------------------------------------------------------------------------------------------


class ProceduralClips:
    """Random worlds and camera paths (`sanawm.worlds`), rendered at the training size.

    Draw d picks a world seed, world kind, path family (action walk with turns / strafes /
    pitch / pauses, smooth spline, closed loop), a speed factor and a field of view from
    `np.random.default_rng([seed, stream, d])`; held-out clips (`held_out=True`) use another
    stream and world seeds no training clip uses.
    """

    def __init__(
        self,
        config: ProceduralConfig,
        num_frames: int,
        size: tuple[int, int],
        seed: int = 0,
        held_out: bool = False,
    ) -> None:
        from sanawm.worlds import KINDS

        unknown = sorted(set(config.kinds) - set(KINDS))
        if unknown:
            raise UserInputError(f"unknown world kind(s) {unknown}; choose from {list(KINDS)}")
        if num_frames < 2:
            raise UserInputError(f"procedural clips need at least 2 frames, got {num_frames}")
        self.config = config
        self.num_frames = num_frames
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.held_out = held_out

    def prepare(self, draw: int) -> Clip:
        """World and camera path of clip `draw` (CPU; rendering happens in `finish`)."""
        from sanawm.worlds import make_world
        from sanawm.worlds.trajectories import loop_trajectory, random_action_walk, random_spline_trajectory

        cfg = self.config
        rng = _draw_rng(self.seed, draw, 1 if self.held_out else 0)
        world_seed = int(rng.integers(0, HELD_OUT_SEED_BASE)) + (HELD_OUT_SEED_BASE if self.held_out else 0)
        kind = cfg.kinds[int(rng.integers(len(cfg.kinds)))]
        weights = np.asarray(cfg.trajectory_weights, dtype=np.float64)
        family = int(rng.choice(3, p=weights / weights.sum()))
        low, high = cfg.speed_scale
        speed = math.exp(rng.uniform(math.log(low), math.log(high)))
        fov = float(rng.uniform(*cfg.fov_deg))
        path_seed = int(rng.integers(0, 2**31))

        world = make_world(world_seed, kind)
        n = self.num_frames
        if family == 1:
            try:
                c2w = random_spline_trajectory(world, n, path_seed, speed=BASE_TRANSLATION_SPEED * speed)
            except RuntimeError:  # no free spline in a cramped world: walk instead
                family = 0
        if family == 2:
            c2w = loop_trajectory(world, n, path_seed, speed=BASE_TRANSLATION_SPEED * speed)
        if family == 0:
            _, c2w = random_action_walk(
                world, n, path_seed,
                translation_speed=BASE_TRANSLATION_SPEED * speed,
                rotation_speed_deg=BASE_ROTATION_SPEED_DEG * speed,
            )  # fmt: skip
        intrinsics = default_intrinsics(self.size, fov).expand(n, 4).clone()
        return Clip(c2w=c2w.float(), intrinsics=intrinsics, world=world)

    def finish(self, clips: list[Clip], device: torch.device) -> ClipBatch:
        """Render the prepared clips on `device` (each clip's frames in one batched call)."""
        from sanawm.worlds import render

        rendered = []
        for clip in clips:
            frames = render(
                clip.world.to(device),
                clip.c2w.to(device),
                clip.intrinsics.to(device),
                self.size,
                supersample=self.config.supersample,
            )
            rendered.append(Clip(clip.c2w, clip.intrinsics, video=frames))  # stays on the device
        return _collate(rendered, device)


# ---------------------------------------------------------------------------------------------
# A folder of real clips
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FolderEntry:
    video: Path
    camera: Path
    text: Path | None


class FolderClips:
    """Clips from a folder: every `NAME.<video>` with a camera file `NAME.camera.npz`,
    `NAME.camera.json` or RealEstate10K `NAME.txt` (one pose per video frame; RE10K
    intrinsics are scaled by the video's size). An optional `NAME.text.safetensors`
    (tensors `states` (L, C) and `mask` (L,)) holds precomputed text-encoder states.

    Draw d takes clip `permutation(seed, epoch)[d % N]` (epoch = d // N), a frame stride from
    `frame_strides` the clip is long enough for, a random start frame, and a random crop: the
    frames are resized to cover the training size times a zoom in [1, max_zoom] and cropped
    at a random offset; the intrinsics follow both steps exactly.
    """

    def __init__(self, config: FolderConfig, num_frames: int, size: tuple[int, int], seed: int = 0) -> None:
        root = Path(config.root)
        if not root.is_dir():
            raise UserInputError(f"training data folder not found: {root}")
        self.config = config
        self.num_frames = num_frames
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.entries = self._scan(root)
        if not self.entries:
            raise UserInputError(
                f"no clips in {root}: expected NAME.mp4 (or .mov/.mkv/.webm/.avi) next to NAME.camera.npz, "
                "NAME.camera.json or a RealEstate10K NAME.txt"
            )

    @staticmethod
    def _scan(root: Path) -> list[_FolderEntry]:
        entries = []
        for video in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
            stem = video.with_suffix("")
            candidates = [camera_path_for(video), Path(f"{stem}.camera.json"), Path(f"{stem}.txt")]
            camera = next((c for c in candidates if c.is_file()), None)
            if camera is None:
                continue
            text = Path(f"{stem}{TEXT_SIDECAR}")
            entries.append(_FolderEntry(video, camera, text if text.is_file() else None))
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def prepare(self, draw: int) -> Clip:
        """Decode, sample frames, crop and adjust the cameras of clip `draw` (CPU)."""
        from sanawm.video import read_video

        rng = _draw_rng(self.seed, draw, 2)
        epoch, slot = divmod(draw, len(self.entries))
        order = np.random.default_rng([self.seed, 3, epoch]).permutation(len(self.entries))
        entry = self.entries[int(order[slot])]

        frames, _ = read_video(entry.video)
        src_size = (int(frames.shape[1]), int(frames.shape[2]))
        traj = self._trajectory(entry, src_size)
        if traj.num_frames != len(frames):
            raise UserInputError(
                f"{entry.camera} has {traj.num_frames} poses but {entry.video} has {len(frames)} frames"
            )
        strides = [s for s in self.config.frame_strides if (self.num_frames - 1) * s + 1 <= len(frames)]
        if not strides:
            raise UserInputError(
                f"{entry.video} has {len(frames)} frames, too few for {self.num_frames} frames at stride "
                f"{min(self.config.frame_strides)}"
            )
        stride = strides[int(rng.integers(len(strides)))]
        span = (self.num_frames - 1) * stride + 1
        start = int(rng.integers(0, len(frames) - span + 1))
        index = np.arange(start, start + span, stride)

        plan = self._crop_plan(src_size, rng)
        video = _resize_crop(torch.from_numpy(frames[index]), plan)
        clip = Clip(c2w=traj.c2w[index], intrinsics=plan.apply(traj.intrinsics[index]), video=video)
        if entry.text is not None:
            clip.text_states, clip.text_mask = _read_text(entry.text)
        return clip

    def finish(self, clips: list[Clip], device: torch.device) -> ClipBatch:
        return _collate(clips, device)

    def _trajectory(self, entry: _FolderEntry, src_size: tuple[int, int]) -> Trajectory:
        try:
            return load_trajectory(entry.camera, image_size=src_size)
        except UserInputError as err:
            raise UserInputError(f"{err} (its video {entry.video} is {src_size[0]}x{src_size[1]})") from None

    def _crop_plan(self, src_size: tuple[int, int], rng: np.random.Generator) -> ResizeCrop:
        (src_h, src_w), (dst_h, dst_w) = src_size, self.size
        zoom = float(rng.uniform(1.0, self.config.max_zoom))
        scale = max(dst_h / src_h, dst_w / src_w) * zoom
        resized = (max(dst_h, round(src_h * scale)), max(dst_w, round(src_w * scale)))
        offset = (int(rng.integers(0, resized[0] - dst_h + 1)), int(rng.integers(0, resized[1] - dst_w + 1)))
        return ResizeCrop(src_size, resized, offset, self.size)


def _resize_crop(frames: torch.Tensor, plan: ResizeCrop) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> resized (antialiased bilinear) and cropped (F, h, w, 3) uint8."""
    x = frames.permute(0, 3, 1, 2).float()
    if plan.resized_size != plan.src_size:
        x = F.interpolate(x, size=plan.resized_size, mode="bilinear", antialias=True, align_corners=False)
    top, left = plan.offset
    h, w = plan.dst_size
    x = x[:, :, top : top + h, left : left + w]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _read_text(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserInputError(f"cannot read text sidecar {path}: {err}") from None
    states = tensors.get("states")
    if states is None or states.dim() != 2:
        raise UserInputError(f"{path}: expected a 'states' tensor of shape (L, C)")
    mask = tensors.get("mask", torch.ones(states.shape[0], dtype=torch.long))
    if mask.shape != (states.shape[0],):
        raise UserInputError(f"{path}: 'mask' must have shape ({states.shape[0]},), got {tuple(mask.shape)}")
    return states.float(), mask.long()


def make_source(
    config: DataConfig, seed: int, held_out: bool = False, num_frames: int | None = None
) -> ProceduralClips | FolderClips:
    """The clip source a data config describes (`num_frames` overrides the config's).

    `held_out` asks for clips from worlds no training draw uses (procedural data only; a
    folder has no such split, so there it only changes the seed)."""
    frames = num_frames or config.num_frames
    size = (config.height, config.width)
    if config.source == "procedural":
        return ProceduralClips(config.procedural, frames, size, seed=seed, held_out=held_out)
    if config.source == "folder":
        return FolderClips(config.folder, frames, size, seed=seed + (1 if held_out else 0))
    raise UserInputError(f"unknown data source {config.source!r}; use 'procedural' or 'folder'")


__all__ = ["Clip", "ClipBatch", "FolderClips", "HELD_OUT_SEED_BASE", "ProceduralClips", "make_source"]
