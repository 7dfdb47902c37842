"""`WorldModel`: image + camera trajectory (+ prompt) in, video frames and their cameras out.

    wm = WorldModel.load()                      # the embedded default model (or a model folder)
    result = wm.generate(action="w-16,l-16")    # bundled example image, default settings
    result.frames                               # (F, H, W, 3) uint8 numpy
    result.trajectory                           # c2w + pixel intrinsics of every output frame

    session = wm.stream(image="photo.jpg", action="w-40")     # chunk-causal, open-ended
    for chunk in session:                                       # as each chunk is decoded
        show(chunk.frames)
        session.push_action("l-16")                             # steer (see sanawm.streaming)

    wm = WorldModel.load("MODEL_DIR", refiner=True)   # with the folder's refiner/ (stage 2)
    wm.generate(action="w-40", refine=True)           # stage-1 latents refined, then decoded

    # torchrun --nproc_per_node 2 script.py: every process runs the same calls, each DiT
    # forward is spread over both (sanawm.parallel.sequence); wm.is_main picks the writer.
    wm = WorldModel.load("MODEL_DIR", sequence_parallel=True)

Everything the user can get wrong is checked by `prepare` before any heavy work starts and
raises `UserInputError`; `generate` / `stream` accept either the same keyword arguments or a
`Request` returned by `prepare`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from sanawm.camera import (
    KEY_LAYOUTS,
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
from sanawm.modeldir import MODES, GenerationSettings, load_transformer, read_model_dir
from sanawm.parallel.sequence import SequenceParallel, local_device
from sanawm.resources import (
    MEMORY_HEADROOM,
    ClipShape,
    available_memory,
    bidirectional_bytes,
    format_bytes,
    streaming_cache_bytes,
    streaming_seconds,
)
from sanawm.sampling.sampler import (
    Conditioning,
    Progress,
    SamplerSettings,
    StreamWindow,
    sample_bidirectional,
)
from sanawm.streaming import StreamSession, plan_queue, resolve_window
from sanawm.text import GemmaTextEncoder, TextEmbedding
from sanawm.vae import VideoVAE, load_vae

if TYPE_CHECKING:  # the refiner needs diffusers, an optional dependency
    from sanawm.refiner.component import Refiner

EXAMPLE_IMAGE = "example.png"
EMBEDDED_MODEL = "embedded"
#: Models that ship in the package, loaded by name (unless a folder of that name exists): the
#: embedded default and its distilled few-step streaming student.
BUNDLED_MODELS = (EMBEDDED_MODEL, "embedded-fast")


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
class ResourceEstimate:
    """What `WorldModel.check_resources` worked out: estimated peak memory above the loaded
    model, compute seconds (streaming only; None when not estimated) and how."""

    peak_bytes: int
    seconds: float | None = None
    basis: str = ""


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
        refiner: Refiner | None = None,
        sequence_parallel: SequenceParallel | None = None,
    ) -> None:
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.settings = settings
        self.text_encoder = text_encoder
        self.refiner = refiner
        self.device = torch.device(device)
        self.sequence_parallel = sequence_parallel
        self._check_consistency()
        if sequence_parallel is not None:
            latent_height = settings.height // self.vae.spatial_stride
            sequence_parallel.check(transformer.config, latent_height)
            self.transformer.sequence_parallel = sequence_parallel

    @property
    def is_main(self) -> bool:
        """Whether this process writes outputs (always, unless it is a rank > 0 of a
        sequence-parallel group)."""
        return self.sequence_parallel is None or self.sequence_parallel.is_main

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        directory: str | Path | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        null_caption: str | os.PathLike | torch.Tensor | None = None,
        camera_rms_clamp: bool | None = None,
        refiner: bool = False,
        refiner_offload: bool = False,
        sequence_parallel: bool = False,
    ) -> WorldModel:
        """Load a model folder (see `sanawm.modeldir`; a diffusers `SanaWMPipeline` folder
        also works), or a bundled model by name (`BUNDLED_MODELS`; None: the embedded default).

        `device` defaults to CUDA when available, `dtype` (of the DiT and text encoder) to
        float32 on CPU and bfloat16 on CUDA. `null_caption` (see `sanawm.load_official`) is
        needed for a transformer saved without its null-caption embedding (diffusers) in a
        model without text encoder; with a text encoder the embedding is never read, so zeros
        stand in. `camera_rms_clamp` picks the camera-branch variant (see `SanaWMConfig`;
        None keeps the model's setting, False unless its folder says otherwise). Nothing is
        ever downloaded. `refiner` also loads the folder's stage-2 `refiner/` component (large:
        it is only loaded when asked for); `refiner_offload` keeps its weights on the CPU and
        streams them to `device` as they run.

        `sequence_parallel` spreads every DiT forward over the processes started by torchrun
        (`sanawm.parallel.sequence`; NCCL on CUDA, gloo on the CPU): every process loads the
        model (on its own GPU, LOCAL_RANK, unless `device` names one) and makes the same calls.
        The heads must divide evenly over the processes.
        """
        if directory is None or (str(directory) in BUNDLED_MODELS and not Path(directory).is_dir()):
            what = "the embedded default model" if directory is None else f"the bundled model {directory!r}"
            directory = _asset(EMBEDDED_MODEL if directory is None else str(directory))
            if not (directory / "model.json").is_file():
                raise UserInputError(f"{what} is not part of this installation; pass a model folder (--model DIR)")
        sp = None
        if sequence_parallel:
            device = choose_device(device)
            if device.type == "cuda" and device.index is None:
                device = local_device()
            sp = SequenceParallel.init(device)
        device = choose_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        spec = read_model_dir(directory)
        if null_caption is None and spec.has_text_encoder:
            null_caption = "zeros"  # unused: prompts (also the empty negative) go through the encoder
        transformer = load_transformer(spec.components["transformer"], dtype=dtype, null_caption=null_caption,
                                       camera_rms_clamp=camera_rms_clamp)  # fmt: skip
        transformer = transformer.to(device)
        vae = load_vae(spec.components["vae"]).to(device)
        text_encoder = None
        if spec.has_text_encoder:
            text_encoder = GemmaTextEncoder.load(
                spec.components["text_encoder"], spec.components["tokenizer"], spec.text, dtype=dtype
            )
            text_encoder.model.to(device)
        stage2 = None
        if refiner or refiner_offload:
            if spec.components.get("refiner") is None:
                raise UserInputError(f"the model in {directory} has no refiner component")
            try:
                from sanawm.refiner.component import Refiner
            except ImportError:
                raise UserInputError("the refiner needs diffusers: pip install 'sanawm[official]'") from None
            stage2 = Refiner.load(spec.components["refiner"], device, dtype, offload=refiner_offload)
        return cls(transformer, vae, spec.settings, text_encoder, device, stage2, sp)

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
        if self.refiner is not None and self.refiner.latent_channels != self.vae.latent_channels:
            problems.append(f"the refiner expects {self.refiner.latent_channels} latent channels, the VAE makes "
                            f"{self.vae.latent_channels}")  # fmt: skip
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
        keys: str = "v1",
        frames_rounding: str = "down",
        context_sigma: float | None = None,
    ) -> Request:
        """Check a request and resolve its defaults (see `generate` for the arguments)."""
        s = self.settings
        notes: list[str] = []
        traj = self._trajectory(trajectory, action, keys)
        count = self._frame_count(traj.num_frames, frames, notes, frames_rounding)
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
            context_sigma=s.context_sigma if context_sigma is None else context_sigma,
        )
        _check_sampler(sampler)
        return Request(picture, traj, prompt or "", sampler, notes)

    def _trajectory(
        self, trajectory: Trajectory | str | os.PathLike | None, action: str | None, keys: str
    ) -> Trajectory:
        if (trajectory is None) == (action is None):
            raise UserInputError("give exactly one of a trajectory or an action string")
        if keys not in KEY_LAYOUTS:
            raise UserInputError(f"unknown key layout {keys!r}; choose one of {', '.join(KEY_LAYOUTS)}")
        if action is not None:
            if not isinstance(action, str):
                raise UserInputError(f"action must be a string, got {type(action).__name__}")
            c2w = action_to_c2w(
                action,
                translation_speed=self.settings.translation_speed,
                rotation_speed_deg=self.settings.rotation_speed_deg,
                keys=keys,
            )
            return Trajectory(c2w, default_intrinsics(self.image_size, self.settings.fov_deg), self.image_size)
        if isinstance(trajectory, Trajectory):
            return trajectory
        return _load_trajectory_file(Path(trajectory), self.image_size, self.settings.fov_deg)

    def _frame_count(self, available: int, frames: int | None, notes: list[str], rounding: str) -> int:
        stride = self.vae.temporal_stride
        if frames is None:
            wanted = available
        else:
            if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
                raise UserInputError(f"the frame count must be a positive integer, got {frames!r}")
            if frames > available:
                raise UserInputError(f"the trajectory has {available} poses, fewer than the {frames} frames asked for")
            wanted = int(frames)
        count = snap_frame_count(wanted, stride, rounding, upper_bound=available)
        if count < stride + 1:
            raise UserInputError(
                f"{wanted} frame(s) is too short a clip: this model needs at least {stride + 1} frames "
                f"({stride + 1} poses in the trajectory)"
            )
        if count != wanted:
            how = "down" if rounding == "down" else "to the nearest"
            notes.append(f"generating {count} frames: this model makes {stride}k+1 frames ({wanted} rounded {how})")
        return count

    # ---- resources -----------------------------------------------------------------------

    def clip_shape(self, request: Request, window: StreamWindow | None = None) -> ClipShape:
        """The sizes the sampler and the VAE will work on for `request` (streamed with
        `window`, if given)."""
        s, vae = self.settings, self.vae
        cache_frames = None
        if window is not None and window.chunks is not None:  # the last chunk may hold 2 chunks' frames
            cache_frames = window.sink + window.chunks * 2 * s.chunk_size
        text_rows = 2 if self.text_encoder is not None and request.sampler.cfg != 1.0 else 1
        return ClipShape(
            frames=request.num_frames,
            height=s.height,
            width=s.width,
            temporal_stride=vae.temporal_stride,
            tokens_per_frame=(s.height // vae.spatial_stride) * (s.width // vae.spatial_stride),
            chunk_size=s.chunk_size,
            guidance_rows=text_rows + (request.sampler.camera_cfg != 1.0),
            steps=request.sampler.steps,
            cache_frames=cache_frames,
        )

    def check_resources(
        self,
        request: Request,
        mode: str = "bidirectional",
        *,
        window: int | str | None = None,
        sink: int | None = None,
        time_it: bool = True,
    ) -> ResourceEstimate:
        """Refuse (`UserInputError`) a request whose estimated peak memory exceeds what is free
        on the device, naming the frame count that fits and the streaming alternative; for
        streaming (with `time_it`) also estimate the compute time on this machine by timing one
        chunk forward. `window` / `sink` as for `stream`. See `sanawm.resources` for how the
        estimates are made."""
        if mode not in MODES:
            raise UserInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        stream_window = resolve_window(window, sink, self.settings.chunk_size) if mode == "streaming" else None
        shape = self.clip_shape(request, stream_window)
        need = self._peak_bytes(shape, mode)
        free = available_memory(self.device)
        if free is not None and need > MEMORY_HEADROOM * free:
            raise UserInputError(self._too_large(shape, mode, need, free))
        if mode == "bidirectional" or not time_it:
            return ResourceEstimate(need)
        seconds = self._time_chunk_forward(shape)
        cfg = self.transformer.config
        total = streaming_seconds(shape, seconds, sum(p.numel() for p in self.transformer.parameters()),
                                  cfg.hidden_size, len(cfg.softmax_blocks))  # fmt: skip
        basis = f"{seconds:.2g} s per chunk forward measured now, {shape.num_chunks} chunks x {shape.steps} steps"
        return ResourceEstimate(need, total, basis)

    def _peak_bytes(self, shape: ClipShape, mode: str) -> int:
        cfg = self.transformer.config
        element = next(self.transformer.parameters()).element_size()
        if mode == "bidirectional":
            return bidirectional_bytes(shape, cfg.hidden_size, element, self.vae.latent_channels)
        attn = getattr(torch, cfg.softmax_attn_dtype).itemsize if cfg.softmax_attn_dtype else element
        chunk = shape.with_frames(1 + (2 * shape.chunk_size - 1) * self.vae.temporal_stride)  # the largest chunk
        cache = streaming_cache_bytes(shape, cfg.hidden_size, len(cfg.softmax_blocks), attn)
        return cache + bidirectional_bytes(chunk, cfg.hidden_size, element, self.vae.latent_channels)

    def _too_large(self, shape: ClipShape, mode: str, need: int, free: int) -> str:
        stride = self.vae.temporal_stride

        def most_frames(shape: ClipShape, mode: str) -> int:  # frames = stride * k + 1; the estimate grows with k
            low, high = 0, (shape.frames - 1) // stride
            while low < high:
                mid = (low + high + 1) // 2
                fits = self._peak_bytes(shape.with_frames(stride * mid + 1), mode) <= MEMORY_HEADROOM * free
                low, high = (mid, high) if fits else (low, mid - 1)
            return stride * low + 1

        where = "this GPU" if self.device.type == "cuda" else "this machine"
        text = (f"{shape.frames} frames need about {format_bytes(need)} in {mode} mode, more than the "
                f"{format_bytes(free)} free on {where}")  # fmt: skip
        if mode == "streaming":
            hint = "" if shape.cache_frames is not None else " (the cache of past frames grows with the clip: bound it with --window)"
            return f"{text}{hint}; at most {most_frames(shape, mode)} frames fit"
        # Streaming with the default window: its memory does not grow with the clip.
        window = resolve_window(None, None, self.settings.chunk_size)
        streamed = most_frames(dataclasses.replace(shape, cache_frames=window.sink + window.chunks * 2 * shape.chunk_size),
                               "streaming")  # fmt: skip
        if streamed == shape.frames:
            return f"{text}; use --mode streaming (chunk by chunk), or at most {most_frames(shape, mode)} frames"
        return (f"{text}; at most {most_frames(shape, mode)} frames fit, or {streamed} with --mode streaming "
                "(chunk by chunk)")  # fmt: skip

    def _time_chunk_forward(self, shape: ClipShape) -> float:
        """Seconds of one forward of one chunk (random inputs, after a warm-up call)."""
        from sanawm.benchmark import time_call

        cfg = self.transformer.config
        dtype = next(self.transformer.parameters()).dtype
        t, h, w = shape.chunk_size, self.settings.height // self.vae.spatial_stride, self.settings.width // self.vae.spatial_stride
        generator = torch.Generator().manual_seed(0)

        def randn(*size: int) -> torch.Tensor:
            return torch.randn(*size, generator=generator).to(self.device, dtype)

        c2w = torch.eye(4).expand(t, 4, 4).flatten(1)
        k = torch.tensor([w, w, w / 2, h / 2], dtype=torch.float32).expand(t, 4)
        inputs = dict(
            latents=randn(1, cfg.in_channels, t, h, w),
            timestep=torch.full((1, t), 500.0, device=self.device),
            text=randn(1, cfg.max_text_len, cfg.caption_channels),
            text_mask=torch.ones(1, cfg.max_text_len, dtype=torch.int64, device=self.device),
            raymap=torch.cat([c2w, k], dim=1)[None].to(self.device),
            chunk_plucker=randn(1, cfg.plucker_channels, t, h, w),
        )
        with torch.no_grad():
            return time_call(lambda: self.transformer(**inputs), self.device, warmup=1, iters=1)

    # ---- generation ----------------------------------------------------------------------

    def generate(
        self,
        image: Image.Image | np.ndarray | str | os.PathLike | None = None,
        *,
        request: Request | None = None,
        mode: str | None = None,
        window: int | str | None = None,
        sink: int | None = None,
        progress: Progress | None = None,
        refine: bool = False,
        cuda_graphs: bool = False,
        **inputs: Any,
    ) -> GenerationResult:
        """Generate a clip.

        Inputs (or a `request` from `prepare`): `image` (PIL, (H, W, 3) uint8 array or path;
        default: the bundled example), exactly one of `trajectory` (a `Trajectory` or a file)
        and `action` (an action string), `prompt`, `frames` (default: the whole trajectory,
        rounded down to a count the VAE can make), `steps`, `cfg` (text guidance),
        `camera_cfg`, `seed`, `keys` (the action key layout, "v1" or "v2", see
        `sanawm.camera.actions`), `frames_rounding` ("down": the largest count the VAE can make
        within `frames`; "nearest": the nearest one within the trajectory, as diffusers does),
        `context_sigma` (streaming: the noise level each finished chunk is committed to the
        caches at, in [0, 1); default: the model's `settings.context_sigma`).
        `mode` is "bidirectional" (whole clip at once) or "streaming" (chunk-causal; `window` /
        `sink` bound its attention, see `stream`); None: the model's default (`settings.mode`). `progress(done, total)` is called after every
        model step. `refine` runs stage 2 (the loaded refiner) on the stage-1 latents before
        decoding. `cuda_graphs`: streaming only, see `stream`.
        """
        mode = self.settings.mode if mode is None else mode
        if mode not in MODES:
            raise UserInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode != "streaming" and (window is not None or sink is not None or cuda_graphs):
            raise UserInputError("window, sink and cuda_graphs apply to streaming mode only")
        self._check_refine(refine)
        request = self._request(image, request, inputs)
        if mode == "streaming":
            chunks = self.stream(request=request, window=window, sink=sink, progress=progress, refine=refine,
                                 cuda_graphs=cuda_graphs)  # fmt: skip
            frames = np.concatenate([chunk.frames for chunk in chunks], axis=0)
        else:
            self.check_resources(request, mode)
            cond = self._conditioning(request)
            latents = sample_bidirectional(self.transformer, cond, request.sampler, progress)
            if refine:
                latents = torch.cat(list(self._refined([latents], request)), dim=2)
            with torch.no_grad():
                frames = VideoVAE.postprocess(self.vae.decode(latents.to(self.vae.dtype)))[0].cpu().numpy()
        return GenerationResult(frames, request.trajectory, self.settings.fps)

    def stream(
        self,
        image: Image.Image | np.ndarray | str | os.PathLike | None = None,
        *,
        request: Request | None = None,
        window: int | str | None = None,
        sink: int | None = None,
        progress: Progress | None = None,
        refine: bool = False,
        cuda_graphs: bool = False,
        **inputs: Any,
    ) -> StreamSession:
        """Chunk-causal generation as a `StreamSession`: iterate it for `StreamChunk`s (frames
        of a chunk as soon as it is decoded, with their cameras); between chunks
        `push_action` / `push_poses` steer the camera.

        Same inputs as `generate`, except that the camera may be left out (it holds still
        until a command is pushed) and that without `frames` and without a `trajectory` the
        stream is open-ended. An action shorter than `frames` holds the camera still at its
        end. `window`: chunks of softmax keys / values kept besides the sink (default 1: with
        the first-chunk sink that is SANA-WM's streaming cache; "full": all); `sink`: latent
        frames from the start kept for ever (default: the first chunk). `progress(done,
        total)`: total is None when open-ended. With `refine`, each stage-1 chunk goes to the
        refiner as soon as it is done, and frames are handed out as soon as their refiner block
        is (memory stays bounded: only the refiner's window and one unfinished block are held).
        `cuda_graphs`: replay each denoising call of a chunk from a CUDA graph once the window
        has filled (`sanawm.model.graphs`): same results, less launch overhead; on CUDA with a
        bounded window only, silently eager elsewhere (the CPU, `window="full"`, sequence
        parallelism). Off by default: it holds a copy of the window's keys / values and the
        graph's own activations.
        """
        self._check_refine(refine)
        window_spec = resolve_window(window, sink, self.settings.chunk_size)
        if request is not None:
            if image is not None or inputs:
                raise UserInputError("pass either a prepared request or generation inputs, not both")
            return self._session(request, request.num_frames, window_spec, progress, refine, "v1", cuda_graphs)
        keys = inputs.get("keys", "v1")
        frames, action, trajectory = inputs.get("frames"), inputs.get("action"), inputs.get("trajectory")
        if trajectory is not None or frames is not None:
            if trajectory is None:  # hold still after the action if more frames are asked for
                inputs["action"] = _pad_action("none-1" if action is None else action, frames, self.settings, keys)
            request = self.prepare(image, **inputs)
            return self._session(request, request.num_frames, window_spec, progress, refine, keys, cuda_graphs)
        # Open-ended: check everything else with a still camera, then queue the action's poses.
        request = self.prepare(image, **{**inputs, "action": f"none-{self.vae.temporal_stride}"})
        c2w = torch.eye(4, dtype=torch.float64)[None]
        if action is not None:
            c2w = action_to_c2w(action, translation_speed=self.settings.translation_speed,
                                rotation_speed_deg=self.settings.rotation_speed_deg, keys=keys)  # fmt: skip
        k = request.trajectory.intrinsics[:1].expand(c2w.shape[0], 4)
        return StreamSession(self, request, plan_queue(c2w, k), None, window_spec, progress, refine, keys, cuda_graphs)

    def _session(
        self, request: Request, frames: int, window: StreamWindow, progress, refine: bool, keys: str,
        cuda_graphs: bool = False,
    ) -> StreamSession:  # fmt: skip
        traj = request.trajectory
        queue = plan_queue(traj.c2w, traj.intrinsics)
        return StreamSession(self, request, queue, frames, window, progress, refine, keys, cuda_graphs)

    def _check_refine(self, refine: bool) -> None:
        if refine and self.refiner is None:
            raise UserInputError("refinement asked for, but no refiner is loaded (WorldModel.load(..., refiner=True))")

    def _refined(self, chunks, request: Request) -> Iterator[torch.Tensor]:
        """Stage 2 over stage-1 latent chunks, in order: yield refined latents (float32) as
        soon as the refiner has them (the sink frame, unrefined, comes first)."""
        refiner = self.refiner.start(request.prompt, fps=self.settings.fps, seed=request.sampler.seed)
        for latents in chunks:
            refined = refiner.push(latents)
            if refined is not None:
                yield refined.float()
        refined = refiner.finish()
        if refined is not None:
            yield refined.float()

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
    def _encode_inputs(
        self, image: Image.Image, prompt: str
    ) -> tuple[torch.Tensor, TextEmbedding, TextEmbedding | None]:
        """The image's normalised latent (1, C, 1, h, w), the prompt's embedding and the
        negative one for text guidance (None for models without text), on the device."""
        pixels = VideoVAE.preprocess(torch.from_numpy(np.array(image))[None, None])
        pixels = pixels.to(self.device, self.vae.dtype)
        first_latent = self.vae.encode(pixels).float()
        if self.text_encoder is None:
            text, negative = self.transformer.null_text(), None
        else:
            text = self.text_encoder.encode(prompt)
            negative = self.text_encoder.encode_negative("")
        text = text.to(self.device, torch.float32)
        negative = negative.to(self.device, torch.float32) if negative is not None else None
        if self.sequence_parallel is not None:  # all ranks must sample from identical inputs
            self.sequence_parallel.broadcast(first_latent)
        return first_latent, text, negative


def _pad_action(action: str, frames: int, settings: GenerationSettings, keys: str) -> str:
    """`action` followed by standing still, so that it covers `frames` frames."""
    if not isinstance(action, str) or isinstance(frames, bool) or not isinstance(frames, (int, np.integer)):
        return action  # prepare() names the problem
    if keys not in KEY_LAYOUTS:
        return action
    have = action_to_c2w(action, translation_speed=settings.translation_speed,
                         rotation_speed_deg=settings.rotation_speed_deg, keys=keys).shape[0]  # fmt: skip
    return action if frames <= have else f"{action},none-{int(frames) - have}"


def _check_sampler(s: SamplerSettings) -> None:
    if isinstance(s.steps, bool) or not isinstance(s.steps, (int, np.integer)) or s.steps < 1:
        raise UserInputError(f"the number of steps must be a positive integer, got {s.steps!r}")
    for name, value in (("cfg", s.cfg), ("camera_cfg", s.camera_cfg)):
        if not np.isfinite(value) or value < 0:
            raise UserInputError(f"{name} must be a finite number >= 0, got {value!r}")
    if isinstance(s.context_sigma, bool) or not isinstance(s.context_sigma, (int, float, np.number)) \
            or not 0 <= s.context_sigma < 1:  # fmt: skip
        raise UserInputError(f"context_sigma must be a number in [0, 1), got {s.context_sigma!r}")
    if isinstance(s.seed, bool) or not isinstance(s.seed, (int, np.integer)) or not 0 <= s.seed < 2**63:
        raise UserInputError(f"the seed must be an integer in [0, 2^63), got {s.seed!r}")


def _load_trajectory_file(path: Path, image_size: tuple[int, int], fov_deg: float) -> Trajectory:
    """Read a trajectory file; files that store no image size are taken to be at the output
    size (and, without intrinsics, to have the model's field of view)."""
    if not path.is_file():
        raise UserInputError(f"trajectory file not found: {path}")
    return load_trajectory(path, fov_deg=fov_deg, default_image_size=image_size)
