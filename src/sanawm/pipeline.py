"""`WorldModel`: image + camera trajectory (+ prompt) in, video frames and their cameras out.

    wm = WorldModel.load()                      # the embedded default model (or a model folder)
    result = wm.generate(action="w-16,l-16")    # bundled example image, default settings
    result.frames                               # (F, H, W, 3) uint8 numpy
    result.trajectory                           # c2w + pixel intrinsics of every output frame

    for frames in wm.stream(image="photo.jpg", action="w-40"):   # chunk-causal, frames as
        show(frames)                                             # each chunk is decoded

Everything the user can get wrong is checked by `prepare` before any heavy work starts and
raises `UserInputError`; `generate` / `stream` accept either the same keyword arguments or a
`Request` returned by `prepare`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sanawm.camera import (
    Trajectory,
    action_to_c2w,
    default_intrinsics,
    load_trajectory,
    plan_resize_crop,
    prepare_image,
    snap_frame_count,
)
from sanawm.camera.packing import pack_camera
from sanawm.device import choose_device
from sanawm.errors import UserInputError
from sanawm.modeldir import GenerationSettings, load_transformer, read_model_dir
from sanawm.sampling.sampler import (
    Conditioning,
    Progress,
    SamplerSettings,
    sample_bidirectional,
    sample_streaming,
)
from sanawm.text import GemmaTextEncoder
from sanawm.vae import VideoVAE, load_vae

MODES = ("bidirectional", "streaming")
EXAMPLE_IMAGE = "example.png"
EMBEDDED_MODEL = "embedded"


def _asset(name: str) -> Path:
    return Path(str(resources.files("sanawm") / "assets" / name))


@dataclass
class Request:
    """A checked generation request (from `WorldModel.prepare`).

    image: the input image at the output size; trajectory: cameras of the output frames
    (c2w, intrinsics in output pixels, output image size); notes: things the user should be
    told (a rounded frame count, an ignored prompt).
    """

    image: Image.Image
    trajectory: Trajectory
    prompt: str
    sampler: SamplerSettings
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return self.trajectory.num_frames


@dataclass
class GenerationResult:
    """frames: (F, H, W, 3) uint8 RGB; trajectory: the camera of every frame; fps: frame rate."""

    frames: np.ndarray
    trajectory: Trajectory
    fps: float


class WorldModel:
    """A loaded model: DiT, VAE, optional text encoder and the model's generation settings."""

    def __init__(
        self,
        transformer,
        vae: VideoVAE,
        settings: GenerationSettings,
        text_encoder: GemmaTextEncoder | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.settings = settings
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self._check_consistency()

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        directory: str | Path | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> WorldModel:
        """Load a model folder (see `sanawm.modeldir`), or the embedded default model.

        `device` defaults to CUDA when available, `dtype` (of the DiT and text encoder) to
        float32 on CPU and bfloat16 on CUDA. Nothing is ever downloaded.
        """
        if directory is None:
            directory = _asset(EMBEDDED_MODEL)
            if not (directory / "model.json").is_file():
                raise UserInputError(
                    "the embedded default model is not part of this installation; pass a model folder (--model DIR)"
                )
        device = choose_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        spec = read_model_dir(directory)
        transformer = load_transformer(spec.components["transformer"], dtype=dtype).to(device)
        vae = load_vae(spec.components["vae"]).to(device)
        text_encoder = None
        if spec.has_text_encoder:
            text_encoder = GemmaTextEncoder.load(
                spec.components["text_encoder"], spec.components["tokenizer"], spec.text, dtype=dtype
            )
            text_encoder.model.to(device)
        return cls(transformer, vae, spec.settings, text_encoder, device)

    def _check_consistency(self) -> None:
        """A model folder whose parts do not fit together is a user error, named here."""
        cfg = self.transformer.config
        problems = []
        if cfg.in_channels != self.vae.latent_channels:
            problems.append(f"the transformer expects {cfg.in_channels} latent channels, the VAE makes "
                            f"{self.vae.latent_channels}")  # fmt: skip
        if cfg.plucker_channels != 6 * self.vae.temporal_stride:
            problems.append(f"the transformer expects {cfg.plucker_channels} Plücker channels, the VAE's temporal "
                            f"stride {self.vae.temporal_stride} gives {6 * self.vae.temporal_stride}")  # fmt: skip
        if self.text_encoder is not None and self.text_encoder.hidden_size != cfg.caption_channels:
            problems.append(f"the text encoder gives {self.text_encoder.hidden_size}-wide states, the transformer "
                            f"expects {cfg.caption_channels}")  # fmt: skip
        s = self.settings
        if s.height % self.vae.spatial_stride or s.width % self.vae.spatial_stride:
            problems.append(f"the output size {s.height}x{s.width} is not a multiple of the VAE's stride "
                            f"{self.vae.spatial_stride}")  # fmt: skip
        if problems:
            raise UserInputError("the model's components do not fit together: " + "; ".join(problems))

    # ---- request checking ------------------------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.settings.height, self.settings.width)

    def prepare(
        self,
        image: Image.Image | np.ndarray | str | os.PathLike | None = None,
        *,
        trajectory: Trajectory | str | os.PathLike | None = None,
        action: str | None = None,
        prompt: str | None = None,
        frames: int | None = None,
        steps: int | None = None,
        cfg: float | None = None,
        camera_cfg: float | None = None,
        seed: int = 0,
    ) -> Request:
        """Check a request and resolve its defaults (see `generate` for the arguments)."""
        s = self.settings
        notes: list[str] = []
        traj = self._trajectory(trajectory, action)
        count = self._frame_count(traj.num_frames, frames, notes)
        traj = Trajectory(traj.c2w[:count], traj.intrinsics[:count], traj.image_size)
        # Intrinsics follow the image through the same resize + centre crop.
        if traj.image_size != self.image_size:
            k = plan_resize_crop(traj.image_size, self.image_size).apply(traj.intrinsics)
            traj = Trajectory(traj.c2w, k, self.image_size)

        if image is None:
            image = _asset(EXAMPLE_IMAGE)
        if isinstance(image, (str, os.PathLike)) and not Path(image).is_file():
            raise UserInputError(f"image not found: {image}")
        try:
            picture, _ = prepare_image(image, self.image_size)
        except (OSError, Image.DecompressionBombError) as err:
            raise UserInputError(f"cannot read the image {image}: {err}") from None

        if prompt and self.text_encoder is None:
            notes.append("this model has no text encoder: the prompt is ignored")
        text_cfg = s.cfg if cfg is None else float(cfg)
        if cfg is not None and self.text_encoder is None and text_cfg != 1.0:
            notes.append("this model has no text encoder: text guidance (--cfg) is skipped")
        steps = s.steps if steps is None else steps
        sampler = SamplerSettings(
            steps=steps,
            flow_shift=s.flow_shift,
            cfg=text_cfg,
            camera_cfg=s.camera_cfg if camera_cfg is None else float(camera_cfg),
            seed=seed,
            # A few-step student samples at its own timesteps, or at shifted uniform ones for
            # another step count (GenerationSettings.timesteps).
            timesteps=s.timesteps if steps == len(s.timesteps) else (),
            few_step=bool(s.timesteps),
        )
        _check_sampler(sampler)
        return Request(picture, traj, prompt or "", sampler, notes)

    def _trajectory(self, trajectory: Trajectory | str | os.PathLike | None, action: str | None) -> Trajectory:
        if (trajectory is None) == (action is None):
            raise UserInputError("give exactly one of a trajectory or an action string")
        if action is not None:
            if not isinstance(action, str):
                raise UserInputError(f"action must be a string, got {type(action).__name__}")
            c2w = action_to_c2w(
                action,
                translation_speed=self.settings.translation_speed,
                rotation_speed_deg=self.settings.rotation_speed_deg,
            )
            return Trajectory(c2w, default_intrinsics(self.image_size, self.settings.fov_deg), self.image_size)
        if isinstance(trajectory, Trajectory):
            return trajectory
        return _load_trajectory_file(Path(trajectory), self.image_size, self.settings.fov_deg)

    def _frame_count(self, available: int, frames: int | None, notes: list[str]) -> int:
        stride = self.vae.temporal_stride
        if frames is None:
            wanted = available
        else:
            if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
                raise UserInputError(f"the frame count must be a positive integer, got {frames!r}")
            if frames > available:
                raise UserInputError(f"the trajectory has {available} poses, fewer than the {frames} frames asked for")
            wanted = int(frames)
        count = snap_frame_count(wanted, stride)
        if count < stride + 1:
            raise UserInputError(
                f"{wanted} frame(s) is too short a clip: this model needs at least {stride + 1} frames "
                f"({stride + 1} poses in the trajectory)"
            )
        if count != wanted:
            notes.append(f"generating {count} frames: this model makes {stride}k+1 frames ({wanted} rounded down)")
        return count

    # ---- generation ----------------------------------------------------------------------

    def generate(
        self,
        image: Image.Image | np.ndarray | str | os.PathLike | None = None,
        *,
        request: Request | None = None,
        mode: str = "bidirectional",
        progress: Progress | None = None,
        **inputs: Any,
    ) -> GenerationResult:
        """Generate a clip.

        Inputs (or a `request` from `prepare`): `image` (PIL, (H, W, 3) uint8 array or path;
        default: the bundled example), exactly one of `trajectory` (a `Trajectory` or a file)
        and `action` (an action string), `prompt`, `frames` (default: the whole trajectory,
        rounded down to a count the VAE can make), `steps`, `cfg` (text guidance),
        `camera_cfg`, `seed`. `mode` is "bidirectional" (whole clip at once) or "streaming"
        (chunk-causal). `progress(done, total)` is called after every model step.
        """
        if mode not in MODES:
            raise UserInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        request = self._request(image, request, inputs)
        if mode == "streaming":
            chunks = list(self.stream(request=request, progress=progress))
            frames = np.concatenate(chunks, axis=0)
        else:
            cond = self._conditioning(request)
            latents = sample_bidirectional(self.transformer, cond, request.sampler, progress)
            with torch.no_grad():
                frames = _to_uint8(self.vae.decode(latents.to(self.vae.dtype)))
        return GenerationResult(frames, request.trajectory, self.settings.fps)

    def stream(
        self,
        image: Image.Image | np.ndarray | str | os.PathLike | None = None,
        *,
        request: Request | None = None,
        progress: Progress | None = None,
        **inputs: Any,
    ) -> Iterator[np.ndarray]:
        """Chunk-causal generation: yield (n, H, W, 3) uint8 frames as each chunk is decoded.

        Same inputs as `generate`. The frames of all chunks, in order, are the whole clip.
        """
        request = self._request(image, request, inputs)
        cond = self._conditioning(request)
        decoder = self.vae.chunk_decoder()
        chunks = sample_streaming(self.transformer, cond, request.sampler, self.settings.chunk_size, progress)
        for latents in chunks:
            with torch.no_grad():
                yield _to_uint8(decoder.decode(latents.to(self.vae.dtype)))

    def _request(self, image, request: Request | None, inputs: dict[str, Any]) -> Request:
        if request is None:
            return self.prepare(image, **inputs)
        if image is not None or inputs:
            raise UserInputError("pass either a prepared request or generation inputs, not both")
        return request

    @torch.no_grad()
    def _conditioning(self, request: Request) -> Conditioning:
        traj = request.trajectory
        raymap, plucker = pack_camera(traj.c2w, traj.intrinsics, traj.image_size, self.vae.strides)
        pixels = VideoVAE.preprocess(torch.from_numpy(np.array(request.image))[None, None])
        pixels = pixels.to(self.device, self.vae.dtype)
        first_latent = self.vae.encode(pixels).float()
        if self.text_encoder is None:
            text, negative = self.transformer.null_text(), None
        else:
            text = self.text_encoder.encode(request.prompt)
            negative = self.text_encoder.encode_negative("")
        return Conditioning(
            first_latent=first_latent,
            text=text.to(self.device, torch.float32),
            raymap=raymap[None].to(self.device),
            chunk_plucker=plucker[None].to(self.device),
            negative_text=negative.to(self.device, torch.float32) if negative is not None else None,
        )


def _check_sampler(s: SamplerSettings) -> None:
    if isinstance(s.steps, bool) or not isinstance(s.steps, (int, np.integer)) or s.steps < 1:
        raise UserInputError(f"the number of steps must be a positive integer, got {s.steps!r}")
    for name, value in (("cfg", s.cfg), ("camera_cfg", s.camera_cfg)):
        if not np.isfinite(value) or value < 0:
            raise UserInputError(f"{name} must be a finite number >= 0, got {value!r}")
    if isinstance(s.seed, bool) or not isinstance(s.seed, (int, np.integer)) or not 0 <= s.seed < 2**63:
        raise UserInputError(f"the seed must be an integer in [0, 2^63), got {s.seed!r}")


def _load_trajectory_file(path: Path, image_size: tuple[int, int], fov_deg: float) -> Trajectory:
    """Read a trajectory file; files that store no image size are taken to be at the output
    size (and, without intrinsics, to have the model's field of view)."""
    if not path.is_file():
        raise UserInputError(f"trajectory file not found: {path}")
    try:
        return load_trajectory(path, fov_deg=fov_deg)
    except UserInputError:
        # The file may just lack an image size; if that was all, this succeeds. Otherwise
        # it fails again with the file's real problem.
        return load_trajectory(path, image_size=image_size, fov_deg=fov_deg)


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8 numpy."""
    return VideoVAE.postprocess(video)[0].cpu().numpy()
