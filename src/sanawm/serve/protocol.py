"""The /v1/realtime message protocol: client messages parsed into dataclasses, server
messages built as dicts.

Client -> server (JSON text):
    {"type": "init", "image": <base64 PNG/JPEG/WebP, optional>, "prompt": str, "action": "w-8",
     "num_frames": null (endless) | N, "steps": int, "format": "jpeg" | "webp", "seed": int}
    {"type": "event", "kind": "action", "payload": "l-8"}
    {"type": "event", "kind": "camera", "payload": [[16 floats row-major] or 4x4, ...]}
        (poses relative to the last generated camera)
    {"type": "event", "kind": "heartbeat"}
    {"type": "close"}
Server -> client:
    {"type": "ready", "model": str, "fps": float, "size": [H, W]}
    {"type": "frame", "index": i, "c2w": [16 floats row-major]}, then one binary message (the image)
    {"type": "error", "message": str}     (a bad message; the session goes on)
    {"type": "end"}

Every check that can be made on the message alone is made here, so a bad action string or
pose list is answered at once rather than when the model reaches it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sanawm.camera.actions import parse_action
from sanawm.errors import UserInputError
from sanawm.serve.config import ServeConfig
from sanawm.serve.images import FRAME_FORMATS, decode_base64, decode_upload

MAX_PROMPT_CHARS = 4000


class ProtocolError(UserInputError):
    """A client message that cannot be acted on; answered with an error message."""


@dataclass(frozen=True)
class Init:
    image: Image.Image | None
    prompt: str | None
    action: str | None
    num_frames: int | None
    steps: int | None
    format: str
    seed: int


@dataclass(frozen=True)
class ActionEvent:
    action: str


@dataclass(frozen=True)
class CameraEvent:
    poses: np.ndarray  # (n, 4, 4) float64, relative to the last generated camera


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Close:
    pass


ClientMessage = Init | ActionEvent | CameraEvent | Heartbeat | Close

_INIT_FIELDS = {"type", "image", "prompt", "action", "num_frames", "steps", "format", "seed"}


def parse_client_message(text: str, config: ServeConfig) -> ClientMessage:
    """Parse one text message; raises `ProtocolError` with a message fit for the client."""
    if len(text) > config.max_init_bytes:  # checked before parsing: no large JSON is ever parsed
        raise ProtocolError(f"message of {len(text)} bytes is larger than the limit of {config.max_init_bytes}")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise ProtocolError('message must be a JSON object with a "type"')
    kind = doc["type"]
    if kind != "init" and len(text) > config.max_event_bytes:
        raise ProtocolError(f"{kind} message of {len(text)} bytes is larger than the limit of {config.max_event_bytes}")
    if kind == "init":
        return _parse_init(doc, config)
    if kind == "event":
        return _parse_event(doc, config)
    if kind == "close":
        return Close()
    raise ProtocolError(f"unknown message type {kind!r}; expected init, event or close")


def _parse_init(doc: dict, config: ServeConfig) -> Init:
    unknown = sorted(set(doc) - _INIT_FIELDS)
    if unknown:
        raise ProtocolError(f"init: unknown field(s) {', '.join(unknown)}")
    image = None
    if doc.get("image") is not None:
        try:
            data = decode_base64(doc["image"], config.max_image_bytes, "init image")
            image = decode_upload(data, config.max_image_pixels, "init image")
        except UserInputError as err:
            raise ProtocolError(str(err)) from None
    prompt = doc.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
        raise ProtocolError(f"init: prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
    action = doc.get("action")
    if action is not None:
        action = _check_action(action, config)
    num_frames = _optional_int(doc, "num_frames", 1, config.max_session_frames)
    steps = _optional_int(doc, "steps", 1, config.max_steps)
    seed = _optional_int(doc, "seed", 0, 2**63 - 1)
    fmt = doc.get("format", "jpeg")
    if fmt not in FRAME_FORMATS:
        raise ProtocolError(f"init: format must be one of {', '.join(FRAME_FORMATS)}, got {fmt!r}")
    return Init(image, prompt or None, action, num_frames, steps, fmt, seed or 0)


def _optional_int(doc: dict, name: str, low: int, high: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"init: {name} must be null or an integer in [{low}, {high}], got {value!r}")
    return value


def _check_action(action: object, config: ServeConfig) -> str:
    if not isinstance(action, str) or len(action) > 1000:
        raise ProtocolError("action must be a string like 'w-8' of at most 1000 characters")
    try:
        frames = sum(segment.frames for segment in parse_action(action))
    except UserInputError as err:
        raise ProtocolError(str(err)) from None
    if frames > config.max_poses_per_event:
        raise ProtocolError(f"action covers {frames} frames, more than the limit of {config.max_poses_per_event}")
    return action


def _parse_event(doc: dict, config: ServeConfig) -> ActionEvent | CameraEvent | Heartbeat:
    unknown = sorted(set(doc) - {"type", "kind", "payload"})
    if unknown:
        raise ProtocolError(f"event: unknown field(s) {', '.join(unknown)}")
    kind = doc.get("kind")
    if kind == "heartbeat":
        return Heartbeat()
    if kind == "action":
        return ActionEvent(_check_action(doc.get("payload"), config))
    if kind == "camera":
        return CameraEvent(_parse_poses(doc.get("payload"), config))
    raise ProtocolError(f"event: unknown kind {kind!r}; expected action, camera or heartbeat")


def _parse_poses(payload: object, config: ServeConfig) -> np.ndarray:
    if not isinstance(payload, list) or not 1 <= len(payload) <= config.max_poses_per_event:
        raise ProtocolError(f"camera: payload must be a list of 1 to {config.max_poses_per_event} poses")
    try:
        poses = np.array(payload, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProtocolError("camera: every pose must be 16 numbers (row-major 4x4) or a 4x4 list") from None
    if poses.shape[1:] == (16,):
        poses = poses.reshape(-1, 4, 4)
    if poses.shape[1:] != (4, 4):
        raise ProtocolError(f"camera: poses must be 16 numbers or 4x4 each, got shape {list(poses.shape)}")
    if not np.isfinite(poses).all():
        raise ProtocolError("camera: poses must be finite")
    if not np.allclose(poses[:, 3], [0, 0, 0, 1], atol=1e-6):
        raise ProtocolError("camera: the last row of every pose must be 0 0 0 1")
    rot = poses[:, :3, :3]
    if not np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-4) or not (np.linalg.det(rot) > 0).all():
        raise ProtocolError("camera: the 3x3 part of every pose must be a rotation")
    return poses


# ---- server messages -----------------------------------------------------------------------


def ready(model: str, fps: float, size: tuple[int, int]) -> str:
    return json.dumps({"type": "ready", "model": model, "fps": fps, "size": [int(size[0]), int(size[1])]})


def frame_header(index: int, c2w: np.ndarray) -> str:
    values = [float(v) for v in np.asarray(c2w, dtype=np.float64).reshape(16)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("non-finite camera pose")
    return json.dumps({"type": "frame", "index": int(index), "c2w": values})


def error(message: str) -> str:
    return json.dumps({"type": "error", "message": message})


def end() -> str:
    return json.dumps({"type": "end"})
