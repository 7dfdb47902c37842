"""`StreamSession`: chunk-by-chunk generation that takes new camera commands between chunks.

    session = wm.stream(image, action="w-40")          # frames=None: goes on while iterated
    for chunk in session:                               # a `StreamChunk` per generated chunk
        show(chunk.frames)                              # (n, H, W, 3) uint8
        if key_pressed:
            session.push_action("l-16")                 # from the next chunk on
    session.close()

Each chunk is denoised against the stream caches of the chunks before it, decoded by the VAE's
causal chunk decoder and handed out; memory stays bounded because the softmax blocks keep only
an attention sink (the first chunk) plus the last few chunks (`window`, `sink`, see
`sanawm.model.StreamCache`) and the GDN blocks a constant-size state.

Cameras are planned as a queue of future poses (camera-to-world, in the world of frame 0):
`push_action` / `push_poses` replace whatever is queued but not yet generated, starting from the
last generated pose; when the queue runs dry the camera holds still and generation goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sanawm.camera import action_to_c2w, pack_camera
from sanawm.camera.convention import as_c2w
from sanawm.errors import UserInputError
from sanawm.chunks import chunk_spans, chunk_starts_for
from sanawm.sampling.sampler import ChunkSampler, Progress, StreamWindow
from sanawm.vae import VideoVAE

if TYPE_CHECKING:
    from sanawm.pipeline import Request, WorldModel

#: Chunks of softmax K/V kept besides the sink. SANA-WM streams with `num_cached_blocks=2`,
#: `sink_token=true`: its cache helper then keeps chunk 0 plus the last num_cached_blocks - 1
#: chunks (two past chunks in all, one of them the sink), which is window 1 + a first-chunk sink.
DEFAULT_WINDOW = 1
#: `window=UNBOUNDED` keeps every past chunk (memory grows with the clip).
UNBOUNDED = "full"


@dataclass
class StreamChunk:
    """One generated chunk.

    start: index of its first frame in the whole video; frames: (n, H, W, 3) uint8;
    c2w: (n, 4, 4) float64 camera-to-world of each frame (OpenCV axes, world of frame 0's
    trajectory); intrinsics: (n, 4) float64 fx, fy, cx, cy in pixels of (H, W).
    """

    start: int
    frames: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray


def resolve_window(window: int | str | None, sink: int | None, chunk_size: int) -> StreamWindow:
    """Check `window` (chunks kept besides the sink; None: DEFAULT_WINDOW; "full": all) and
    `sink` (latent frames from the start kept for ever; None: the first chunk, chunk_size + 1)."""
    if window is None:
        chunks = DEFAULT_WINDOW
    elif window == UNBOUNDED:
        chunks = None
    elif isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise UserInputError(f"window must be a number of chunks >= 0 or {UNBOUNDED!r}, got {window!r}")
    else:
        chunks = int(window)
    if sink is None:
        sink = chunk_size + 1
    elif isinstance(sink, bool) or not isinstance(sink, (int, np.integer)) or sink < 0:
        raise UserInputError(f"sink must be a number of latent frames >= 0, got {sink!r}")
    return StreamWindow(chunks, int(sink))


def continue_motion(last: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """Poses of an action rolled out from the identity (`action_to_c2w`), continued from pose
    `last` (4, 4) instead, in float64.

    The action language yaws about world y (left-multiplied), pitches about the camera x axis
    (right-multiplied) and walks on the ground plane along the current heading; so a relative
    pose Ry(dyaw) Rx(dpitch) becomes Ry(dyaw) R_last Rx(dpitch), and its ground-plane
    translation turns by the heading of `last`.
    """
    last, rel = last.double(), rel.double()
    r = rel[:, :3, :3]
    dyaw = torch.atan2(-r[:, 2, 0], r[:, 0, 0])
    dpitch = torch.atan2(-r[:, 1, 2], r[:, 1, 1])
    forward = last[:3, 2]
    level = forward[[0, 2]].norm() > 1e-9  # looking straight up or down: no heading, keep 0
    heading = torch.atan2(forward[0], forward[2]) if level else torch.zeros((), dtype=torch.float64)
    out = torch.eye(4, dtype=torch.float64).repeat(rel.shape[0], 1, 1)
    out[:, :3, :3] = _rot_y(dyaw) @ last[:3, :3] @ _rot_x(dpitch)
    out[:, :3, 3] = last[:3, 3] + rel[:, :3, 3] @ _rot_y(heading[None])[0].T
    return out


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s, one, zero = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([one, zero, zero, zero, c, -s, zero, s, c], dim=-1).reshape(-1, 3, 3)


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s, one, zero = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=-1).reshape(-1, 3, 3)


class _CameraQueue:
    """The poses still to generate, and the last pose handed out (float64, CPU)."""

    def __init__(self, origin: torch.Tensor, origin_k: torch.Tensor, poses: torch.Tensor, k: torch.Tensor):
        self.origin, self.origin_k = origin, origin_k
        self.poses, self.k = poses, k  # (n, 4, 4), (n, 4): frames 1, 2, ... not yet generated
        self.last, self.last_k = origin, origin_k

    def replace(self, poses: torch.Tensor, k: torch.Tensor | None = None) -> None:
        self.poses = poses
        self.k = self.last_k.expand(poses.shape[0], 4).clone() if k is None else k

    def take(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next n poses; past the end of the queue the camera holds still."""
        poses, k = self.poses[:n], self.k[:n]
        self.poses, self.k = self.poses[n:], self.k[n:]
        if poses.shape[0]:
            self.last, self.last_k = poses[-1].clone(), k[-1].clone()
        missing = n - poses.shape[0]
        if missing:
            poses = torch.cat([poses, self.last.expand(missing, 4, 4)])
            k = torch.cat([k, self.last_k.expand(missing, 4)])
        return poses.clone(), k.clone()


class StreamSession:
    """A running chunk-causal generation (from `WorldModel.stream`); iterate it for
    `StreamChunk`s. See the module doc; `frames` None means open-ended."""

    def __init__(
        self,
        wm: WorldModel,
        request: Request,
        queue: _CameraQueue,
        frames: int | None,
        window: StreamWindow,
        progress: Progress | None = None,
        refine: bool = False,
        keys: str = "v1",
        cuda_graphs: bool = False,
    ) -> None:
        self.wm = wm
        self.keys = keys
        """Key layout of `push_action` (see `sanawm.camera.actions`)."""
        self.fps = int(wm.settings.fps) if float(wm.settings.fps).is_integer() else wm.settings.fps
        self.image_size = wm.image_size
        self.window = window
        self.num_frames = frames
        """Frames the stream stops after (None: open-ended)."""
        self._queue = queue
        self._lock = threading.Lock()
        stride = wm.vae.temporal_stride
        self._stride = stride
        chunk_size = wm.settings.chunk_size
        self._bounds: Iterator[tuple[int, int]] = _chunk_bounds(frames, stride, chunk_size)
        total_chunks = None if frames is None else len(list(_chunk_bounds(frames, stride, chunk_size)))
        first_latent, text, negative = wm._encode_inputs(request.image, request.prompt)
        self._sampler: ChunkSampler | None = ChunkSampler(
            wm.transformer, first_latent, text, negative, request.sampler, window, progress, total_chunks, cuda_graphs
        )
        self._decoder = wm.vae.chunk_decoder()
        # Stage 2: refined latents come out in refiner blocks, not in stage-1 chunks, so the
        # cameras of generated frames wait in `_pending` until their frames are decoded.
        self._refiner = wm.refiner.start(request.prompt, fps=wm.settings.fps, seed=request.sampler.seed) if refine else None
        self._pending_c2w: list[torch.Tensor] = []
        self._pending_k: list[torch.Tensor] = []
        self._decoded = 0
        self.notes = list(request.notes)

    # ---- camera commands -------------------------------------------------------------------

    def push_action(self, action: str) -> None:
        """Queue motion in the action language (e.g. "w-16,l-8"), from the last generated pose;
        it replaces motion queued earlier and takes effect at the next chunk."""
        s = self.wm.settings
        rel = action_to_c2w(action, translation_speed=s.translation_speed, rotation_speed_deg=s.rotation_speed_deg,
                            keys=self.keys)  # fmt: skip
        with self._lock:
            self._queue.replace(continue_motion(self._queue.last, rel)[1:])

    def push_poses(self, rel_c2w: Any) -> None:
        """Queue explicit poses (n, 4, 4) given relative to the last generated pose; they replace
        motion queued earlier and take effect at the next chunk."""
        rel = as_c2w(rel_c2w, "poses")
        with self._lock:
            self._queue.replace(self._queue.last @ rel)

    # ---- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> StreamSession:
        return self

    def __next__(self) -> StreamChunk:
        while self._sampler is not None:
            chunk = self._generate_chunk()
            if chunk is not None:
                return chunk
        raise StopIteration

    def _generate_chunk(self) -> StreamChunk | None:
        """Sample the next chunk and decode what is ready: the chunk itself, or with a refiner
        whatever refined latents it handed back (None when it holds them all for now)."""
        bounds = next(self._bounds, None)
        if bounds is None:
            self.close()
            return None
        start, stop = bounds
        s = self._stride
        first = 0 if start == 0 else s * (start - 1) + 1
        count = s * (stop - 1) + 1 - first
        with self._lock:
            c2w, k = self._queue.take(count - 1 if start == 0 else count)
            if start == 0:
                c2w = torch.cat([self._queue.origin[None], c2w])
                k = torch.cat([self._queue.origin_k[None], k])
            origin, origin_k = self._queue.origin, self._queue.origin_k
        last = self.num_frames is not None and first + count >= self.num_frames
        self._pending_c2w.append(c2w)
        self._pending_k.append(k)
        # Nothing of a stream is ever differentiated: inference mode spares every op the
        # autograd bookkeeping that no_grad still does (a few % of a chunk on the CPU).
        with torch.inference_mode():
            camera = self._camera(c2w, k, origin, origin_k, start == 0)
            latents = self._sampler.sample(start, stop, camera)
            if not last:  # the last chunk is never read again
                self._sampler.commit(latents, camera)
            if self._refiner is not None:
                parts = [self._refiner.push(latents)] + ([self._refiner.finish()] if last else [])
                parts = [p.float() for p in parts if p is not None]
                latents = torch.cat(parts, dim=2) if parts else None
            chunk = None if latents is None else self._decode(latents)
        if last:
            self.close()
        return chunk

    def _decode(self, latents: torch.Tensor) -> StreamChunk:
        """Decode the next latents of the video and pair the frames with their cameras."""
        with torch.no_grad():
            pixels = self._decoder.decode(latents.to(self.wm.vae.dtype))
        frames = VideoVAE.postprocess(pixels)[0].cpu().numpy()
        c2w, k = torch.cat(self._pending_c2w), torch.cat(self._pending_k)
        n = frames.shape[0]
        assert c2w.shape[0] >= n, (c2w.shape, n)
        self._pending_c2w, self._pending_k = [c2w[n:]], [k[n:]]
        first, self._decoded = self._decoded, self._decoded + n
        return StreamChunk(first, frames, c2w[:n].numpy(), k[:n].numpy())

    def _camera(self, c2w, k, origin, origin_k, first_chunk: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Model camera inputs of a chunk's latent frames: its pixel frames' poses packed
        after frame 0's (all poses count relative to frame 0)."""
        if not first_chunk:
            c2w, k = torch.cat([origin[None], c2w]), torch.cat([origin_k[None], k])
        raymap, plucker = pack_camera(c2w, k, self.image_size, self.wm.vae.strides)
        if not first_chunk:
            raymap, plucker = raymap[1:], plucker[:, 1:]
        device = self.wm.device
        return raymap[None].to(device), plucker[None].to(device)

    def close(self) -> None:
        """Stop: later iteration ends at once, and the caches are freed."""
        self._sampler = None
        self._decoder = None
        self._refiner = None

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _chunk_bounds(frames: int | None, stride: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) latent frames of each chunk: as `sanawm.chunks` cuts a clip of `frames`
    frames, or chunks of chunk_size for ever (after the first, one frame longer)."""
    if frames is not None:
        latent_frames = (frames - 1) // stride + 1
        yield from chunk_spans(chunk_starts_for(latent_frames, chunk_size), latent_frames)
        return
    start, stop = 0, chunk_size + 1
    while True:
        yield start, stop
        start, stop = stop, stop + chunk_size


def plan_queue(c2w: torch.Tensor, intrinsics: torch.Tensor) -> _CameraQueue:
    """A queue that starts at pose c2w[0] and then follows the rest of the poses."""
    c2w, k = c2w.double(), intrinsics.double()
    return _CameraQueue(c2w[0], k[0], c2w[1:], k[1:])


__all__ = [
    "DEFAULT_WINDOW",
    "UNBOUNDED",
    "StreamChunk",
    "StreamSession",
    "continue_motion",
    "plan_queue",
    "resolve_window",
]
