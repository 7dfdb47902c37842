"""`WorldModel`: image + camera trajectory (+ prompt) in, video frames and their cameras out.

    wm = WorldModel.load()                      # the embedded default model (or a model folder)
    result = wm.generate(action="w-16,l-16")    # bundled example image, default settings
    result.frames                               # (F, H, W, 3) uint8 numpy
    result.trajectory                           # c2w + pixel intrinsics of every output frame

    session = wm.stream(image="photo.jpg", action="w-40")     # chunk-causal, open-ended
    for chunk in session:                                       # as each chunk is decoded
        show(chunk.frames)
        session.push_action("l-16")                             # steer (see sanawm.streaming)

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
from sanawm.errors import UserInputError
from sanawm.modeldir import GenerationSettings, load_transformer, read_model_dir
from sanawm.sampling.sampler import (
    Conditioning,
    Progress,
    SamplerSettings,
    StreamWindow,
    sample_bidirectional,
)
from sanawm.streaming import StreamSession, plan_queue, resolve_window
from sanawm.text import GemmaTextEncoder, TextEmbedding, null_text
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
        try:
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError:
            raise UserInputError(f"unknown device {device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserInputError(f"device {device} asked for, but CUDA is not available")
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
        sampler = SamplerSettings(
            steps=s.steps if steps is None else steps,
            flow_shift=s.flow_shift,
            cfg=text_cfg,
            camera_cfg=s.camera_cfg if camera_cfg is None else float(camera_cfg),
            seed=seed,
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
        window: int | str | None = None,
        sink: int | None = None,
        progress: Progress | None = None,
        **inputs: Any,
    ) -> GenerationResult:
        """Generate a clip.

        Inputs (or a `request` from `prepare`): `image` (PIL, (H, W, 3) uint8 array or path;
        default: the bundled example), exactly one of `trajectory` (a `Trajectory` or a file)
        and `action` (an action string), `prompt`, `frames` (default: the whole trajectory,
        rounded down to a count the VAE can make), `steps`, `cfg` (text guidance),
        `camera_cfg`, `seed`. `mode` is "bidirectional" (whole clip at once) or "streaming"
        (chunk-causal; `window` / `sink` bound its attention, see `stream`).
        `progress(done, total)` is called after every model step.
        """
        if mode not in MODES:
            raise UserInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        request = self._request(image, request, inputs)
        if mode == "streaming":
            chunks = self.stream(request=request, window=window, sink=sink, progress=progress)
            frames = np.concatenate([chunk.frames for chunk in chunks], axis=0)
        else:
            cond = self._conditioning(request)
            latents = sample_bidirectional(self.transformer, cond, request.sampler, progress)
            with torch.no_grad():
                frames = _to_uint8(self.vae.decode(latents.to(_vae_dtype(self.vae))))
        return GenerationResult(frames, request.trajectory, self.settings.fps)

    def stream(
        self,
        image: Image.Image | np.ndarray | str | os.PathLike | None = None,
        *,
        request: Request | None = None,
        window: int | str | None = None,
        sink: int | None = None,
        progress: Progress | None = None,
        **inputs: Any,
    ) -> StreamSession:
        """Chunk-causal generation as a `StreamSession`: iterate it for `StreamChunk`s (frames
        of a chunk as soon as it is decoded, with their cameras); between chunks
        `push_action` / `push_poses` steer the camera.

        Same inputs as `generate`, except that the camera may be left out (it holds still
        until a command is pushed) and that without `frames` and without a `trajectory` the
        stream is open-ended. An action shorter than `frames` holds the camera still at its
        end. `window`: chunks of softmax keys / values kept besides the sink (default 1: with
        the first-chunk sink that is SANA-WM's streaming cache; "full": all); `sink`: latent frames from the start kept for ever
        (default: the first chunk). `progress(done, total)`: total is None when open-ended.
        """
        window_spec = resolve_window(window, sink, self.settings.chunk_size)
        if request is not None:
            if image is not None or inputs:
                raise UserInputError("pass either a prepared request or generation inputs, not both")
            return self._session(request, request.num_frames, window_spec, progress)
        frames, action, trajectory = inputs.get("frames"), inputs.get("action"), inputs.get("trajectory")
        if trajectory is not None or frames is not None:
            if trajectory is None:  # hold still after the action if more frames are asked for
                inputs["action"] = _pad_action("none-1" if action is None else action, frames, self.settings)
            request = self.prepare(image, **inputs)
            return self._session(request, request.num_frames, window_spec, progress)
        # Open-ended: check everything else with a still camera, then queue the action's poses.
        request = self.prepare(image, **{**inputs, "action": f"none-{self.vae.temporal_stride}"})
        c2w = torch.eye(4, dtype=torch.float64)[None]
        if action is not None:
            c2w = action_to_c2w(action, translation_speed=self.settings.translation_speed,
                                rotation_speed_deg=self.settings.rotation_speed_deg)  # fmt: skip
        k = request.trajectory.intrinsics[:1].expand(c2w.shape[0], 4)
        return StreamSession(self, request, plan_queue(c2w, k), None, window_spec, progress)

    def _session(self, request: Request, frames: int, window: StreamWindow, progress) -> StreamSession:
        traj = request.trajectory
        return StreamSession(self, request, plan_queue(traj.c2w, traj.intrinsics), frames, window, progress)

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
        first_latent, text, negative = self._encode_inputs(request.image, request.prompt)
        return Conditioning(
            first_latent=first_latent,
            text=text,
            raymap=raymap[None].to(self.device),
            chunk_plucker=plucker[None].to(self.device),
            negative_text=negative,
        )

    @torch.no_grad()
    def _encode_inputs(self, image: Image.Image, prompt: str) -> tuple[torch.Tensor, TextEmbedding, TextEmbedding | None]:
        """The image's normalised latent (1, C, 1, h, w), the prompt's embedding and the
        negative one for text guidance (None for models without text), on the device."""
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1.0
        pixels = pixels[None, :, None].to(self.device, _vae_dtype(self.vae))
        first_latent = self.vae.encode(pixels).float()
        if self.text_encoder is None:
            text, negative = null_text(self.transformer.y_embedder.y_embedding), None
        else:
            text = self.text_encoder.encode(prompt)
            negative = self.text_encoder.encode_negative("")
        text = text.to(self.device, torch.float32)
        negative = negative.to(self.device, torch.float32) if negative is not None else None
        return first_latent, text, negative


def _pad_action(action: str, frames: int, settings: GenerationSettings) -> str:
    """`action` followed by standing still, so that it covers `frames` frames."""
    if not isinstance(action, str) or isinstance(frames, bool) or not isinstance(frames, (int, np.integer)):
        return action  # prepare() names the problem
    have = action_to_c2w(action, translation_speed=settings.translation_speed,
                         rotation_speed_deg=settings.rotation_speed_deg).shape[0]  # fmt: skip
    return action if frames <= have else f"{action},none-{int(frames) - have}"


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


def _vae_dtype(vae: VideoVAE) -> torch.dtype:
    return next(vae.parameters()).dtype


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8."""
    frames = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()
