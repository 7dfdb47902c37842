"""Reading and writing camera trajectories; the format follows the file suffix.

* ``.npz`` (sanawm's sidecar, written next to every video as ``NAME.camera.npz``): arrays
  ``c2w`` (F, 4, 4) float32, ``intrinsics`` (F, 4) float32 pixels, ``image_size`` (2,) int64 (H, W).
* ``.npy``: one (F, 4, 4) c2w array (poses only).
* ``.json``: an object ``{"image_size": [H, W], "c2w": [F x 4x4 nested lists],
  "intrinsics": [F x [fx, fy, cx, cy]]}``; ``intrinsics`` may also be a single ``[fx, fy, cx, cy]``,
  and ``intrinsics`` / ``image_size`` may be left out (see `load_trajectory`).
* ``.txt``: RealEstate10K camera files. Line 1 is the video URL; then one line per frame:
  ``timestamp_us fx fy cx cy 0 0`` followed by the 12 numbers of the 3x4 **world-to-camera**
  matrix, row-major. fx, cx are divided by the image width and fy, cy by the height.

All poses are in the sanawm convention (OpenCV axes); ``opengl=True`` converts on load.
"""

from __future__ import annotations

import json
import os
import zipfile
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sanawm.camera.convention import as_c2w, as_float64, as_image_size, opengl_to_opencv, pose_inverse
from sanawm.camera.image import DEFAULT_FOV_DEG, default_intrinsics
from sanawm.camera.tools import rescale_trajectory
from sanawm.camera.trajectory import Trajectory
from sanawm.errors import UserInputError

SUFFIXES = (".npz", ".npy", ".json", ".txt")
CAMERA_SUFFIX = ".camera.npz"
_RE10K_VALUES_PER_LINE = 19  # timestamp, 4 intrinsics, 2 zeros, 12 pose values


def camera_path_for(video: str | PathLike) -> Path:
    """The camera file that goes with a video: ``NAME.camera.npz`` next to ``NAME.mp4``."""
    video = Path(video)
    return video.with_name(video.stem + CAMERA_SUFFIX)


def save_camera_npz(
    path: str | PathLike, c2w: Any, intrinsics: Any, image_size: tuple[int, int]
) -> Path:
    """Write the ``.npz`` sidecar (validated; intrinsics ``(4,)`` or ``(F, 4)`` pixels). Returns the path."""
    return save_trajectory(path, Trajectory(c2w, intrinsics, image_size))


def save_trajectory(path: str | PathLike, trajectory: Trajectory, *, fps: float = 16.0) -> Path:
    """Write ``trajectory`` in the format named by the suffix of ``path`` (see module docstring).

    ``.npy`` keeps only the poses. ``fps`` sets the RealEstate10K timestamps (``.txt`` only).
    The file is replaced atomically (written next to it, then renamed), so a reader, or a run
    killed while writing, never sees half a file.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not isinstance(trajectory, Trajectory):
        raise UserInputError(f"expected a Trajectory, got {type(trajectory).__name__}")
    c2w = trajectory.c2w.numpy()
    intrinsics = trajectory.intrinsics.numpy()
    with _replacing(path) as f:
        if suffix == ".npz":  # a file object stops numpy from appending another ".npz"
            np.savez(f, c2w=c2w, intrinsics=intrinsics, image_size=np.array(trajectory.image_size, dtype=np.int64))
        elif suffix == ".npy":
            np.save(f, c2w)
        elif suffix == ".json":
            doc = {"image_size": list(trajectory.image_size), "c2w": c2w.tolist(), "intrinsics": intrinsics.tolist()}
            f.write((json.dumps(doc) + "\n").encode())
        else:
            f.write(_format_re10k(trajectory, fps).encode())
    return path


class _replacing:
    """``with _replacing(path) as f``: a binary file next to ``path`` that becomes ``path`` on
    success (made with `open`, so it gets the usual permissions) and is removed on failure."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.{os.getpid()}.partial")

    def __enter__(self):
        self.file = self.partial.open("wb")
        return self.file

    def __exit__(self, exc_type, *exc) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)


def load_trajectory(
    path: str | PathLike,
    *,
    image_size: tuple[int, int] | None = None,
    intrinsics: Any = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    opengl: bool = False,
    default_image_size: tuple[int, int] | None = None,
) -> Trajectory:
    """Read a trajectory file (format by suffix, see module docstring).

    The arguments fill in what a file lacks: ``image_size`` (required for ``.npy``, for
    RealEstate10K files whose intrinsics are normalised, and for ``.json``/``.npz`` without one),
    then ``intrinsics`` (``(4,)`` or ``(F, 4)`` pixels), else `default_intrinsics` with ``fov_deg``.
    An argument that contradicts the file raises. ``default_image_size`` is the size taken for a
    file that stores none (unlike ``image_size`` it never contradicts the file).
    ``opengl=True`` reads OpenGL-convention poses (camera +y up, looking down -z) and converts them.
    """
    path = Path(path)
    suffix = _suffix(path)
    known_size = image_size if image_size is not None else default_image_size
    if suffix == ".npz":
        c2w, file_k, file_size = _read_npz(path)
    elif suffix == ".npy":
        c2w, file_k, file_size = _read_npy(path), None, None
    elif suffix == ".json":
        c2w, file_k, file_size = _read_json(path)
    else:
        size = _need_size(known_size, path, "RealEstate10K intrinsics are normalised by the image size")
        c2w, file_k, file_size = *_read_re10k(path, size), size

    size = _merge_size(file_size, image_size, default_image_size, path)
    if file_k is not None:
        if intrinsics is not None:
            raise UserInputError(f"{path} already holds intrinsics; do not pass intrinsics as well")
        k = file_k
    elif intrinsics is not None:
        k = intrinsics
    else:
        k = default_intrinsics(size, fov_deg)
    if opengl:
        c2w = opengl_to_opencv(as_c2w(c2w, f"{path} c2w"))
    try:
        return Trajectory(c2w, k, size)
    except UserInputError as err:
        raise UserInputError(f"{path}: {err}") from None


def load_trajectory_at(path: str | PathLike, image_size: tuple[int, int], *, fov_deg: float = DEFAULT_FOV_DEG) -> Trajectory:
    """A trajectory file's cameras for frames of ``image_size`` (H, W).

    A file that stores no image size (``.npy``, RealEstate10K, some ``.json``) is taken to be at
    ``image_size``; a file made for another size has its intrinsics rescaled to it
    (`rescale_trajectory`: a plain resize, no crop).
    """
    trajectory = load_trajectory(path, fov_deg=fov_deg, default_image_size=image_size)
    return rescale_trajectory(trajectory, image_size)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserInputError(
            f"{path}: unknown trajectory format {suffix or '(no suffix)'!r}; use one of {', '.join(SUFFIXES)}"
        )
    return suffix


def _need_size(image_size: Any, path: Path, why: str) -> tuple[int, int]:
    if image_size is None:
        raise UserInputError(f"{path}: the image size (H, W) is needed ({why}); pass image_size (--image-size)")
    return as_image_size(image_size)


def _merge_size(file_size: Any, arg_size: Any, default_size: Any, path: Path) -> tuple[int, int]:
    if file_size is None:
        return _need_size(arg_size if arg_size is not None else default_size, path, "the file does not store one")
    size = as_image_size(file_size, f"{path} image_size")
    if arg_size is not None and as_image_size(arg_size) != size:
        raise UserInputError(f"{path} is for image size {size}, but image_size={tuple(arg_size)} was passed")
    return size


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, zipfile.BadZipFile, EOFError):  # not a zip of plain arrays (e.g. pickled data)
        raise UserInputError(f"{path} is not a camera file: expected a NumPy .npz archive with a 'c2w' array") from None
    if "c2w" not in arrays:
        raise UserInputError(f"{path} has no 'c2w' array (found: {', '.join(arrays) or 'nothing'})")
    return arrays["c2w"], arrays.get("intrinsics"), arrays.get("image_size")


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError):
        raise UserInputError(f"{path} is not a camera file: expected a NumPy .npy array of (F, 4, 4) poses") from None


def _read_json(path: Path) -> tuple[Any, Any, Any]:
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(doc, dict) or "c2w" not in doc:
        raise UserInputError(f'{path}: expected a JSON object with a "c2w" list of 4x4 matrices')
    unknown = set(doc) - {"c2w", "intrinsics", "image_size"}
    if unknown:
        raise UserInputError(f"{path}: unknown JSON field(s) {', '.join(sorted(unknown))}")
    return doc["c2w"], doc.get("intrinsics"), doc.get("image_size")


def _read_re10k(path: Path, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines[1:], start=2):  # line 1 is the source video URL
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != _RE10K_VALUES_PER_LINE:
            raise UserInputError(
                f"{path} line {number}: expected {_RE10K_VALUES_PER_LINE} numbers "
                f"(timestamp fx fy cx cy 0 0 + 3x4 w2c), got {len(fields)}"
            )
        try:
            rows.append([float(v) for v in fields])
        except ValueError as err:
            raise UserInputError(f"{path} line {number}: {err}") from None
    if not rows:
        raise UserInputError(f"{path} holds no camera lines (RealEstate10K format: URL line, then one line per frame)")
    table = torch.tensor(rows, dtype=torch.float64)
    height, width = image_size
    k = table[:, 1:5] * torch.tensor([width, height, width, height], dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64).repeat(len(rows), 1, 1)
    w2c[:, :3, :] = table[:, 7:].reshape(-1, 3, 4)
    return pose_inverse(as_c2w(w2c, f"{path} world-to-camera poses")), k


def _format_re10k(trajectory: Trajectory, fps: float) -> str:
    if not fps > 0:
        raise UserInputError(f"fps must be positive, got {fps}")
    height, width = trajectory.image_size
    w2c = pose_inverse(as_float64(trajectory.c2w, "c2w"))[:, :3, :].reshape(-1, 12)
    k = trajectory.intrinsics.double() / torch.tensor([width, height, width, height], dtype=torch.float64)
    lines = ["sanawm-trajectory"]  # stands in for the source video URL
    for i in range(trajectory.num_frames):
        values = [*k[i].tolist(), 0.0, 0.0, *w2c[i].tolist()]
        lines.append(" ".join([str(round(i * 1e6 / fps))] + [f"{v + 0.0:.9g}" for v in values]))  # + 0.0: -0 -> 0
    return "\n".join(lines) + "\n"
