"""The on-disk layout of a sanawm model: one folder, one `model.json`, one sub-path per component.

    MODEL_DIR/
      model.json          which components exist + generation settings (`ModelDirSpec`)
      transformer/        config.json (SanaWMConfig fields) + model.safetensors (float, or weight
                          matrices as int8 + per-row scales: `quantize_int8`), or a single
                          official checkpoint file (config inferred from shapes)
      vae/                compact VAE (config.json with "kind": "compact" + model.safetensors)
                          or a diffusers AutoencoderKLLTX2Video folder
      text_encoder/       optional: a transformers Gemma-2 folder (config.json + safetensors)
      tokenizer/          required with text_encoder: a transformers tokenizer folder
      refiner/            optional: the stage-2 LTX-2 refiner (see `sanawm.refiner.component`)

`model.json`:

    {
      "format": "sanawm-model", "version": 1,
      "components": {"transformer": "transformer", "vae": "vae",
                     "text_encoder": null, "tokenizer": null},
      "text": {"max_length": 300, "prompt_prefix": ""},
      "settings": {"height": 128, "width": 128, "fps": 16, "steps": 20, ...}
    }

Component paths are relative to the folder (absolute paths also work), so the official release
maps onto this layout without copying: point "transformer" at the released checkpoint file,
"vae" at the LTX-2 VAE folder, "text_encoder" / "tokenizer" at the Gemma-2 folders. A model
without text (the embedded one) sets both text entries to null. Every loader error names the
component and the path it looked at.

A diffusers `SanaWMPipeline` folder (`model_index.json`, `transformer/`, `vae/`, `scheduler/`,
optional `text_encoder/` + `tokenizer/`) is read directly, without a `model.json`: components
and their classes from `model_index.json`, the flow shift from `scheduler/scheduler_config.json`,
the architecture from `transformer/config.json`, and what no file states (output size, fps,
steps, guidance, prompt length and instruction prefix, action-key speeds) from the defaults of
the installed diffusers `SanaWMPipeline`, which is what that folder produces in diffusers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sanawm.errors import UserInputError
from sanawm.jsonfile import read_json_object
from sanawm.text import TextEncoderConfig

MODEL_JSON = "model.json"
PIPELINE_INDEX = "model_index.json"
CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"
FORMAT_NAME = "sanawm-model"
FORMAT_VERSION = 1
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "refiner")
REQUIRED_COMPONENTS = ("transformer", "vae")


#: How a clip is generated: the whole clip at once, or chunk by chunk.
MODES = ("bidirectional", "streaming")


@dataclass
class GenerationSettings:
    """What a model was trained for, and its default sampling settings."""

    height: int
    """Output frame height in pixels (the training resolution)."""
    width: int
    """Output frame width in pixels."""
    fps: float = 16.0
    """Frame rate the training videos had (and the output MP4 gets)."""
    fov_deg: float = 60.0
    """Horizontal field of view assumed when the camera's intrinsics are not given."""
    translation_speed: float = 0.05
    """Metres per frame of a W/A/S/D action key, in the training data's scale."""
    rotation_speed_deg: float = 1.2
    """Degrees per frame of an I/J/K/L action key."""
    steps: int = 60
    """Default number of sampling steps."""
    flow_shift: float = 8.0
    """Timestep shift of the flow-matching schedule."""
    cfg: float = 5.0
    """Default text guidance scale (ignored by models without a text encoder)."""
    camera_cfg: float = 1.0
    """Default camera guidance scale (1: off)."""
    chunk_size: int = 3
    """Latent frames per chunk in streaming mode (the first chunk also holds the image's frame)."""
    timesteps: tuple[float, ...] = ()
    """Few-step students (`sanawm train --stage distill-*`): the timesteps (0..1000, decreasing
    from 1000) the model denoises at, predicting the clean latents at each and re-noising them
    with fresh noise to the next; `steps` equals their count. Another step count samples the
    same way at `shift(1 - i / steps)` with `flow_shift`. Empty: flow-matching Euler."""
    mode: str = "bidirectional"
    """How `generate` runs when not told: "bidirectional" (the whole clip at once) or
    "streaming" (chunk by chunk; what a chunk-causal few-step student is made for)."""
    context_sigma: float = 0.0
    """Streaming: the noise level (0 <= level < 1) each finished chunk is committed to the stream
    caches at. 0 commits the clean latents, as SANA-WM does; the embedded models use a small level
    so that long streams do not feed their own output back (`sanawm.sampling.sampler`)."""

    def __post_init__(self) -> None:
        self.timesteps = tuple(float(t) for t in self.timesteps)
        t = self.timesteps
        if t and not (t[0] == 1000 and all(a > b for a, b in zip(t, t[1:])) and t[-1] > 0):
            raise UserInputError(f"generation settings: timesteps must start at 1000 and decrease above 0: {list(t)}")
        if self.mode not in MODES:
            raise UserInputError(f"generation settings: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 <= self.context_sigma < 1.0:  # also refuses NaN
            raise UserInputError(f"generation settings: context_sigma must be in [0, 1), got {self.context_sigma!r}")
        if t and self.steps != len(t):
            raise UserInputError(f"generation settings: steps ({self.steps}) must equal the timestep count ({len(t)})")
        positive = {
            "height": self.height,
            "width": self.width,
            "fps": self.fps,
            "steps": self.steps,
            "flow_shift": self.flow_shift,
            "chunk_size": self.chunk_size,
        }
        bad = [name for name, value in positive.items() if not value > 0]
        if bad:
            raise UserInputError(f"generation settings must be positive: {', '.join(bad)}")


@dataclass
class ModelDirSpec:
    """Parsed `model.json` (or diffusers `model_index.json`): component paths (absolute, None
    when absent) and settings."""

    root: Path
    components: dict[str, Path | None]
    settings: GenerationSettings
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    layout: str = "sanawm"
    """"sanawm" (`model.json`) or "diffusers" (a `SanaWMPipeline` folder)."""

    @property
    def has_text_encoder(self) -> bool:
        return self.components.get("text_encoder") is not None


def read_model_dir(directory: str | Path) -> ModelDirSpec:
    """Read and check `directory/model.json` (or a diffusers pipeline's `model_index.json`);
    every named component must exist on disk."""
    root = Path(directory)
    if not root.is_dir():
        raise UserInputError(f"model folder not found: {root}")
    if not (root / MODEL_JSON).is_file() and (root / PIPELINE_INDEX).is_file():
        return read_diffusers_pipeline_dir(root)
    doc = read_json_object(root / MODEL_JSON, "model description")
    if doc.get("format") != FORMAT_NAME:
        raise UserInputError(f"{root / MODEL_JSON}: not a sanawm model description (format != {FORMAT_NAME!r})")
    if doc.get("version") != FORMAT_VERSION:
        raise UserInputError(f"{root / MODEL_JSON}: unsupported version {doc.get('version')!r}")

    entries = doc.get("components")
    if not isinstance(entries, dict):
        raise UserInputError(f"{root / MODEL_JSON}: 'components' must be an object")
    unknown = sorted(set(entries) - set(COMPONENTS))
    if unknown:
        raise UserInputError(f"{root / MODEL_JSON}: unknown component(s) {unknown}; known: {list(COMPONENTS)}")
    components: dict[str, Path | None] = {}
    for name in COMPONENTS:
        value = entries.get(name)
        if value is None:
            if name in REQUIRED_COMPONENTS:
                raise UserInputError(f"{root / MODEL_JSON}: the {name} component is missing")
            components[name] = None
            continue
        path = root / value
        if not path.exists():
            raise UserInputError(f"model component {name!r} not found: {path}")
        components[name] = path
    if (components["text_encoder"] is None) != (components["tokenizer"] is None):
        have, lack = ("text_encoder", "tokenizer") if components["text_encoder"] else ("tokenizer", "text_encoder")
        raise UserInputError(f"{root / MODEL_JSON}: has a {have} but the {lack} component is missing")

    settings = _dataclass_from(GenerationSettings, doc.get("settings"), f"{root / MODEL_JSON} settings")
    text = _dataclass_from(TextEncoderConfig, doc.get("text", {}), f"{root / MODEL_JSON} text")
    return ModelDirSpec(root, components, settings, text)


def write_model_json(
    directory: str | Path,
    settings: GenerationSettings,
    components: dict[str, str | None] | None = None,
    text: TextEncoderConfig | None = None,
) -> Path:
    """Write `model.json` into `directory` (components default to the standard sub-folders,
    without text encoder). Component paths are stored as given (relative to `directory`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = {"transformer": "transformer", "vae": "vae", "text_encoder": None, "tokenizer": None}
    entries.update(components or {})
    doc: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "components": entries}
    if entries.get("text_encoder") is not None:
        doc["text"] = dataclasses.asdict(text or TextEncoderConfig())
    doc["settings"] = dataclasses.asdict(settings)
    path = directory / MODEL_JSON
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


# ---- diffusers SanaWMPipeline folders ---------------------------------------------------------

DIFFUSERS_PIPELINE_CLASS = "SanaWMPipeline"
_DIFFUSERS_CLASSES = {
    "transformer": ("SanaWMTransformer3DModel",),
    "vae": ("AutoencoderKLLTX2Video",),
    "scheduler": ("FlowMatchEulerDiscreteScheduler",),
}
# Scheduler options whose non-default values change the schedule in ways we do not implement.
_SCHEDULER_DEFAULTS = {
    "num_train_timesteps": 1000,
    "use_dynamic_shifting": False,
    "shift_terminal": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "invert_sigmas": False,
    "stochastic_sampling": False,
}


def read_diffusers_pipeline_dir(root: Path) -> ModelDirSpec:
    """A `ModelDirSpec` for a diffusers `SanaWMPipeline` folder (see the module doc)."""
    index_path = root / PIPELINE_INDEX
    index = read_json_object(index_path, "diffusers pipeline index")
    if index.get("_class_name") != DIFFUSERS_PIPELINE_CLASS:
        raise UserInputError(f"{index_path}: a {index.get('_class_name')!r} pipeline, not {DIFFUSERS_PIPELINE_CLASS!r}")
    components: dict[str, Path | None] = {}
    for name in (*COMPONENTS, "scheduler"):
        entry = index.get(name)
        present = isinstance(entry, list) and len(entry) == 2 and entry[1] is not None
        if name in _DIFFUSERS_CLASSES and (not present or entry[1] not in _DIFFUSERS_CLASSES[name]):
            raise UserInputError(f"{index_path}: the {name} must be a {_DIFFUSERS_CLASSES[name][0]}, got {entry!r}")
        components[name] = root / name if present else None
        if present and not (root / name).is_dir():
            raise UserInputError(f"model component {name!r} not found: {root / name}")
    if (components["text_encoder"] is None) != (components["tokenizer"] is None):
        raise UserInputError(f"{index_path}: a text encoder needs its tokenizer and vice versa")
    scheduler_dir = components.pop("scheduler")
    flow_shift = _flow_shift(read_json_object(scheduler_dir / "scheduler_config.json", "scheduler config"),
                             scheduler_dir / "scheduler_config.json")  # fmt: skip
    call, cam = _diffusers_pipeline_defaults()
    settings = GenerationSettings(
        height=call["height"],
        width=call["width"],
        fps=float(call["fps"]),
        translation_speed=cam.DEFAULT_TRANSLATION_SPEED,
        rotation_speed_deg=cam.DEFAULT_ROTATION_SPEED_DEG,
        steps=call["num_inference_steps"],
        flow_shift=flow_shift,
        cfg=float(call["guidance_scale"]),
    )
    text = TextEncoderConfig(max_length=call["max_sequence_length"], prompt_prefix=call["prompt_prefix"])
    return ModelDirSpec(root, components, settings, text, layout="diffusers")


def _flow_shift(config: dict, where: Path) -> float:
    if config.get("_class_name", _DIFFUSERS_CLASSES["scheduler"][0]) not in _DIFFUSERS_CLASSES["scheduler"]:
        raise UserInputError(f"{where}: not a {_DIFFUSERS_CLASSES['scheduler'][0]} config")
    unsupported = [f"{k}={config[k]!r}" for k, v in _SCHEDULER_DEFAULTS.items() if k in config and config[k] != v]
    if unsupported:
        raise UserInputError(f"{where}: scheduler settings this implementation does not support: "
                             + ", ".join(unsupported))  # fmt: skip
    shift = config.get("shift", 1.0)
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not shift > 0:
        raise UserInputError(f"{where}: shift must be a positive number, got {shift!r}")
    return float(shift)


def _diffusers_pipeline_defaults():
    """(`SanaWMPipeline.__call__` defaults + "prompt_prefix", diffusers' camera utilities module)."""
    import inspect

    try:
        from diffusers import SanaWMPipeline
        from diffusers.pipelines.sana_wm import cam_utils, pipeline_sana_wm
    except ImportError as err:
        raise UserInputError(f"reading a diffusers pipeline folder needs diffusers >= 0.42.1 ({err})") from None
    params = inspect.signature(SanaWMPipeline.__call__).parameters
    call = {name: params[name].default for name in
            ("height", "width", "fps", "num_inference_steps", "guidance_scale", "max_sequence_length")}  # fmt: skip
    call["prompt_prefix"] = "\n".join(pipeline_sana_wm.DEFAULT_CHI_PROMPT)
    return call, cam_utils


def _dataclass_from(cls, values: Any, where: str):
    if not isinstance(values, dict):
        raise UserInputError(f"{where}: expected an object")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserInputError(f"{where}: unknown field(s) {unknown}")
    try:
        return cls(**values)
    except TypeError as err:
        raise UserInputError(f"{where}: {err}") from None


# ---- the transformer component --------------------------------------------------------------


#: Suffix of the per-row scales of an int8-stored weight (`quantize_int8`).
INT8_SCALE = ".int8_row_scale"


def quantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of 2+ dimensions as int8 with one float32 scale per output row (the first
    dimension): w ~= q * scale, q = round(w / scale) in [-127, 127], scale = max|row| / 127,
    so every weight is within scale / 2 of its original; other floating tensors (biases,
    norms: small, often sensitive) as float16. Loading (`dequantize_int8`) restores floats."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not value.is_floating_point():
            out[name] = value
        elif value.dim() >= 2:
            rows = value.detach().float().reshape(value.shape[0], -1)
            scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            out[name] = (rows / scale[:, None]).round().clamp(-127, 127).to(torch.int8).reshape(value.shape)
            out[name + INT8_SCALE] = scale
        else:
            out[name] = value.to(torch.float16)
    return out


def dequantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 weights of a `quantize_int8` state (a state without int8 entries is returned as is)."""
    scales = {name[: -len(INT8_SCALE)]: value for name, value in state.items() if name.endswith(INT8_SCALE)}
    if not scales:
        return state
    out = {}
    for name, value in state.items():
        if name.endswith(INT8_SCALE):
            continue
        if name in scales:
            if value.dtype != torch.int8 or scales[name].shape != (value.shape[0],):
                raise UserInputError(f"{name}: an int8 weight needs int8 values and one scale per row")
            shape = (-1,) + (1,) * (value.dim() - 1)
            value = value.float() * scales[name].float().view(shape)
        out[name] = value
    return out


def save_transformer(model, directory: str | Path, int8: bool = False) -> Path:
    """Write a `SanaWMTransformer` as `config.json` (its `SanaWMConfig`) + `model.safetensors`
    (with `int8`: weight matrices as int8 + per-row scales, see `quantize_int8`; about half the
    size of float16, dequantised when loaded)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_JSON).write_text(json.dumps(dataclasses.asdict(model.config), indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if int8:
        state = quantize_int8(state)
    save_file(state, str(directory / WEIGHTS))
    return directory


def load_transformer(
    path: str | Path, dtype: torch.dtype = torch.float32, null_caption=None, camera_rms_clamp: bool | None = None
):
    """Load the transformer component: a folder written by `save_transformer`, a single
    released checkpoint file (safetensors / torch) whose architecture is read from its shapes,
    or a diffusers `SanaWMTransformer3DModel` folder (`null_caption`: see `load_official`).
    `camera_rms_clamp` (see `SanaWMConfig`), when not None, overrides the stored setting."""
    from sanawm.model import SanaWMConfig, SanaWMTransformer, load_official
    from sanawm.model.formats import DIFFUSERS_CLASS
    from sanawm.model.loading import check_state_dict

    path = Path(path)
    overrides = {} if camera_rms_clamp is None else {"camera_rms_clamp": bool(camera_rms_clamp)}
    if path.is_file():
        return load_official(path, dtype=dtype, null_caption=null_caption, **overrides)
    fields = read_json_object(path / CONFIG_JSON, "transformer config")
    if fields.get("_class_name") == DIFFUSERS_CLASS:
        return load_official(path, dtype=dtype, null_caption=null_caption, **overrides)
    known = {f.name for f in dataclasses.fields(SanaWMConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UserInputError(f"{path / CONFIG_JSON}: unknown transformer config field(s) {unknown}")
    if isinstance(fields.get("softmax_blocks"), list):
        fields["softmax_blocks"] = tuple(fields["softmax_blocks"])
    config = SanaWMConfig(**{**fields, **overrides})
    weights = path / WEIGHTS
    if not weights.is_file():
        raise UserInputError(f"transformer weights not found: {weights}")
    state = dequantize_int8(load_file(str(weights)))
    model = SanaWMTransformer(config, device="meta")
    try:
        check_state_dict(model, state)
    except UserInputError as err:
        raise UserInputError(f"{weights}: {err}") from None
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    return model.eval()


def save_model_dir(
    directory: str | Path, transformer, vae, settings: GenerationSettings
) -> Path:
    """Write a complete text-free model folder (`transformer/`, `vae/`, `model.json`); the
    VAE must have a `save(directory)` method (the compact VAE does)."""
    directory = Path(directory)
    save_transformer(transformer, directory / "transformer")
    vae.save(directory / "vae")
    write_model_json(directory, settings)
    return directory
