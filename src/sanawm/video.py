"""Video files: H.264 MP4 writing (progressive, survives a killed process), reading, and
small PNG-strip / GIF helpers for documentation.

Frames everywhere are RGB `uint8` arrays shaped (H, W, 3) or (N, H, W, 3), as numpy arrays
or torch tensors (any device).

MP4 files are written as *fragmented* MP4 (`empty_moov`, one fragment per frame) with a
zero-latency H.264 encoder: every `VideoWriter.write` call encodes and flushes its frames
to disk straight away, so if the process dies the file still plays up to (all but the very
last of) the frames written so far. Normal MP4 puts its index at the end and is unreadable
without it.

H.264 in yuv420p stores chroma at half resolution, so the width and height must be even;
odd sizes are refused with a `UserInputError` rather than silently padded or cropped (a
silent change of size would break pixel-exact comparisons with rendered ground truth).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np
import torch

from sanawm.errors import UserInputError

Frames = Union[np.ndarray, torch.Tensor]


def _as_uint8_frames(frames: Frames, what: str = "frames") -> np.ndarray:
    """Return frames as a C-contiguous uint8 numpy array (N, H, W, 3); validate dtype/shape."""
    if isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise UserInputError(f"{what} must be uint8, got torch dtype {frames.dtype}")
        frames = frames.detach().cpu().numpy()
    elif isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise UserInputError(f"{what} must be uint8, got numpy dtype {frames.dtype}")
    else:
        raise UserInputError(f"{what} must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserInputError(f"{what} must be shaped (H, W, 3) or (N, H, W, 3), got {tuple(frames.shape)}")
    return np.ascontiguousarray(frames)


def _check_fps(fps: float) -> Fraction:
    try:
        rate = Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError):
        raise UserInputError(f"fps must be a positive number, got {fps!r}") from None
    if rate <= 0:
        raise UserInputError(f"fps must be positive, got {fps!r}")
    return rate


class VideoWriter:
    """Progressive H.264 MP4 writer; use as a context manager.

    Args:
        path: output file (`.mp4`); parent folders must exist.
        fps: frames per second (float or int).
        size: (height, width) of every frame; `None` takes it from the first `write`.
        crf: x264 constant rate factor (0 = lossless, 18 = visually lossless, 23 = x264 default).
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int] | None = None, crf: int = 18):
        self.path = Path(path)
        self.fps = _check_fps(fps)
        if not 0 <= int(crf) <= 51:
            raise UserInputError(f"crf must be in 0..51, got {crf}")
        self.crf = int(crf)
        self.size: tuple[int, int] | None = None
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._closed = False
        if size is not None:
            self._open(tuple(int(s) for s in size))

    def _open(self, size: tuple[int, int]) -> None:
        height, width = size
        if height <= 0 or width <= 0 or height % 2 or width % 2:
            raise UserInputError(
                f"video size must be positive and even (H.264 yuv420p), got {height}x{width}"
            )
        self.size = (height, width)
        if not self.path.parent.is_dir():
            raise UserInputError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        import av  # PyAV is only needed to encode / decode, not for the frame-strip helpers

        self._container = av.open(
            str(self.path),
            mode="w",
            format="mp4",
            # empty_moov + a fragment per frame: the file is valid after every frame;
            # flush_packets pushes each fragment out of ffmpeg's I/O buffer at once.
            options={"movflags": "empty_moov+frag_every_frame+default_base_moof", "flush_packets": "1"},
        )
        stream = self._container.add_stream(
            "libx264",
            rate=self.fps,
            # zerolatency: no B-frames or look-ahead, so each frame is encoded immediately;
            # a keyframe every 2 s keeps the file seekable.
            options={"tune": "zerolatency", "crf": str(self.crf), "g": str(max(1, round(2 * float(self.fps))))},
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        self._stream = stream

    def write(self, frames: Frames) -> None:
        """Encode and flush one frame (H, W, 3) or a batch (N, H, W, 3) of uint8 RGB frames."""
        if self._closed:
            raise UserInputError(f"VideoWriter for {self.path} is closed")
        batch = _as_uint8_frames(frames)
        if self.size is None:
            self._open(batch.shape[1:3])
        if tuple(batch.shape[1:3]) != self.size:
            raise UserInputError(
                f"frame size {batch.shape[1]}x{batch.shape[2]} differs from the video size {self.size[0]}x{self.size[1]}"
            )
        import av

        for image in batch:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1  # per frame: an interrupt mid-batch leaves an exact count

    def close(self) -> None:
        """Flush the encoder and finish the file. Safe to call twice. A writer closed before
        any frame (and created without `size`) leaves no file."""
        self._closed = True
        if self._container is None:
            return
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._container = None
        self._stream = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame of the first video stream: (uint8 frames (F, H, W, 3) RGB, fps)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"video file not found: {path}")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserInputError(f"{path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.FFmpegError as err:
        # str(err) reads "[Errno 1094995529] Invalid data ...: 'path'"; the reason alone is the news
        reason = (err.strerror or type(err).__name__).rstrip(".")
        reason = reason[:1].lower() + reason[1:]
        raise UserInputError(f"cannot read video {path}: {reason} (not a video file, or a damaged one)") from None
    if not frames:
        raise UserInputError(f"{path} contains no decodable frames")
    return np.stack(frames), float(rate) if rate else 0.0


def write_video(path: str | os.PathLike, frames: Frames, fps: float, crf: int = 18) -> None:
    """Write uint8 RGB frames (N, H, W, 3) to an H.264 MP4 in one call."""
    batch = _as_uint8_frames(frames)
    with VideoWriter(path, fps, size=batch.shape[1:3], crf=crf) as writer:
        writer.write(batch)


def frame_strip(frames: Frames, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Tile frames left-to-right, top-to-bottom into one uint8 image with white gaps.

    `columns=None` puts every frame in one row.
    """
    batch = _as_uint8_frames(frames)
    n, h, w, _ = batch.shape
    columns = n if columns is None else max(1, min(int(columns), n))
    rows = -(-n // columns)
    sheet = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for i, image in enumerate(batch):
        r, c = divmod(i, columns)
        sheet[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = image
    return sheet


def save_png_strip(path: str | os.PathLike, frames: Frames, columns: int | None = None, gap: int = 2) -> None:
    """Save frames as one tiled PNG (see `frame_strip`)."""
    from PIL import Image

    Image.fromarray(frame_strip(frames, columns, gap)).save(Path(path), format="PNG")


def save_gif(path: str | os.PathLike, frames: Frames, fps: float, loop: bool = True) -> None:
    """Save frames as an animated GIF (palette-quantised; for docs, not for metrics)."""
    from PIL import Image

    rate = _check_fps(fps)
    batch = _as_uint8_frames(frames)
    images = [Image.fromarray(image) for image in batch]
    # Pillow: loop=0 repeats forever; leaving `loop` out plays the animation once.
    extra = {"loop": 0} if loop else {}
    images[0].save(
        Path(path),
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / float(rate))),  # GIF stores delays in milliseconds
        **extra,
    )
