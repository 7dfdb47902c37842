"""The WASD/IJKL action language: keyboard-style commands rolled out into a camera trajectory.

An action string is a comma-separated list of segments ``<keys>-<frames>``, e.g.
``"w-100,dw-60,none-10"``: hold the keys for that many frames. Keys are case-insensitive;
``none`` stands still. Keys held together add up (``wd`` walks diagonally, ``ws`` cancels).
Whitespace is ignored and a full-width comma counts as a comma.

Two key layouts exist (``keys=``):

* ``"v1"`` (default; the first SANA-WM release and diffusers 0.42.1): ``w`` / ``s`` move
  forward / back, ``a`` / ``d`` move left / right, ``i`` / ``k`` pitch up / down, ``j`` / ``l``
  yaw left / right. Motion starts and stops with the keys. A pitch step that would go beyond
  +-``pitch_limit_deg`` (default 85) is skipped; reaching the limit exactly is allowed.
* ``"v2"`` (the newer NVlabs release, `inference_video_scripts/camera_control.py`):
  ``a`` / ``d`` yaw, ``j`` / ``l`` move left / right, the rest as v1, with smoothed motion:
  each of the four velocities (forward, sideways, yaw, pitch) jumps to its target on the frame
  a new key is pressed and otherwise approaches it exponentially, with time constant 0.45 s
  towards a non-zero target and 1.0 s towards zero (at the release's fixed 16 frames per
  second), so released keys coast to a stop. Pitch is clamped to +-``pitch_limit_deg``
  (default 60); default speeds 0.025 per frame and 0.6 degrees per frame.

In both, walking is along the camera's forward (+z) and right (+x) axes projected on the ground
(world x-z) plane and normalised, so looking up or down does not slow walking; yaw turns about
the world y axis, pitch about the camera x axis; poses are camera-to-world, OpenCV axes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from sanawm.errors import UserInputError

ACTION_KEYS = "wasdijkl"
KEY_LAYOUTS = ("v1", "v2")
_DURATION = re.compile(r"[0-9]+")

# Per layout: default translation speed (per frame), rotation speed (degrees per frame), pitch limit.
LAYOUT_DEFAULTS = {"v1": (0.05, 1.2, 85.0), "v2": (0.025, 0.6, 60.0)}
# v2 smoothing (the newer release's velocity model): frame rate and time constants in seconds.
SMOOTHING_FPS = 16.0
TAU_PRESS = 0.45
TAU_COAST = 1.0
# v2 divides the ground-plane directions by (norm + this), as the release does.
_V2_NORM_EPS = 1e-6


@dataclass(frozen=True)
class ActionSegment:
    """One parsed segment: the keys held (empty for ``none``) and for how many frames."""

    keys: frozenset[str]
    frames: int


def parse_action(action: str) -> list[ActionSegment]:
    """Parse an action string into segments; any malformed segment raises ``UserInputError`` naming it."""
    if not isinstance(action, str):
        raise UserInputError(f"action must be a string like 'w-40,l-20', got {type(action).__name__}")
    cleaned = "".join(action.replace("\uff0c", ",").split())
    if not cleaned:
        raise UserInputError("action string is empty; expected segments like 'w-40,l-20'")
    segments = []
    for position, text in enumerate(cleaned.split(","), start=1):
        segments.append(_parse_segment(text, position))
    return segments


def _parse_segment(text: str, position: int) -> ActionSegment:
    where = f"action segment {position} {text!r}"
    if not text:
        raise UserInputError(f"action segment {position} is empty (stray comma?)")
    if "-" not in text:
        raise UserInputError(f"{where}: expected '<keys>-<frames>', e.g. 'w-40'")
    keys_text, frames_text = text.rsplit("-", 1)
    if not _DURATION.fullmatch(frames_text):
        raise UserInputError(f"{where}: frame count {frames_text!r} is not a positive integer")
    frames = int(frames_text)
    if frames <= 0:
        raise UserInputError(f"{where}: frame count must be positive, got {frames}")
    keys_text = keys_text.lower()
    if not keys_text:
        raise UserInputError(f"{where}: no keys before '-' (use 'none' to stand still)")
    if keys_text == "none":
        return ActionSegment(frozenset(), frames)
    unknown = sorted({c for c in keys_text if c not in ACTION_KEYS})
    if unknown:
        raise UserInputError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(ACTION_KEYS)} or 'none'"
        )
    repeated = sorted({c for c in keys_text if keys_text.count(c) > 1})
    if repeated:
        raise UserInputError(f"{where}: key(s) {', '.join(map(repr, repeated))} listed twice")
    return ActionSegment(frozenset(keys_text), frames)


def action_to_c2w(
    action: str,
    translation_speed: float | None = None,
    rotation_speed_deg: float | None = None,
    pitch_limit_deg: float | None = None,
    *,
    keys: str = "v1",
) -> torch.Tensor:
    """Roll out an action string into camera-to-world poses.

    ``keys`` picks the layout (``"v1"`` or ``"v2"``, see the module doc); speeds and the pitch
    limit left as None take the layout's defaults. Returns a float32 CPU tensor ``(N + 1, 4, 4)``
    where N is the total number of frames in the string; pose 0 is the identity (the input
    image's camera), pose n the camera after n frames.
    """
    if keys not in KEY_LAYOUTS:
        raise UserInputError(f"unknown key layout {keys!r}; choose one of {', '.join(KEY_LAYOUTS)}")
    defaults = LAYOUT_DEFAULTS[keys]
    translation_speed = defaults[0] if translation_speed is None else translation_speed
    rotation_speed_deg = defaults[1] if rotation_speed_deg is None else rotation_speed_deg
    pitch_limit_deg = defaults[2] if pitch_limit_deg is None else pitch_limit_deg
    for value, label in (
        (translation_speed, "translation_speed"),
        (rotation_speed_deg, "rotation_speed_deg"),
    ):
        if not math.isfinite(value) or value < 0:
            raise UserInputError(f"{label} must be a finite number >= 0, got {value}")
    if not 0 <= pitch_limit_deg <= 90:
        raise UserInputError(f"pitch_limit_deg must be within [0, 90], got {pitch_limit_deg}")

    held = [seg.keys for seg in parse_action(action) for _ in range(seg.frames)]
    if keys == "v2":
        return _rollout_v2(held, translation_speed, rotation_speed_deg, pitch_limit_deg)

    # Angles are tracked as integer step counts so that hitting the pitch limit exactly does
    # not depend on floating-point accumulation.
    yaw_steps, pitch_steps = [0], [0]
    for keys in held:
        yaw_steps.append(yaw_steps[-1] + ("l" in keys) - ("j" in keys))
        pitch = pitch_steps[-1] + ("i" in keys) - ("k" in keys)
        if abs(pitch) * rotation_speed_deg > pitch_limit_deg + 1e-9:
            pitch = pitch_steps[-1]
        pitch_steps.append(pitch)
    step = math.radians(rotation_speed_deg)
    yaw = torch.tensor(yaw_steps, dtype=torch.float64) * step
    pitch = torch.tensor(pitch_steps, dtype=torch.float64) * step

    # Yaw about world y (left-multiplied) and pitch about camera x (right-multiplied) commute
    # into one product, so the orientation after n frames is Ry(total yaw) @ Rx(total pitch).
    rot = _rot_y(yaw) @ _rot_x(pitch)

    # Ground-plane walking directions of the *new* orientation of each frame.
    forward = _ground_unit(rot[1:, :, 2])
    right = _ground_unit(rot[1:, :, 0])
    amount = torch.tensor(
        [[("w" in k) - ("s" in k), ("d" in k) - ("a" in k)] for k in held], dtype=torch.float64
    ).reshape(-1, 2)
    moves = translation_speed * (amount[:, :1] * forward + amount[:, 1:] * right)

    c2w = torch.eye(4, dtype=torch.float64).repeat(len(held) + 1, 1, 1)
    c2w[:, :3, :3] = rot
    c2w[1:, :3, 3] = torch.cumsum(moves, dim=0)
    return c2w.float()


def _rollout_v2(held: list[frozenset[str]], speed: float, rotation_deg: float, limit_deg: float) -> torch.Tensor:
    """The v2 layout: smoothed velocities integrated frame by frame (float64)."""
    rate = math.radians(rotation_deg)
    limit = math.radians(limit_deg)
    dt = 1.0 / SMOOTHING_FPS
    # velocity and target: (forward, right, yaw right, pitch up), per frame
    velocity = np.zeros(4)
    previous: frozenset[str] = frozenset()
    rot, position, pitch = np.eye(3), np.zeros(3), 0.0
    poses = [np.eye(4)]
    for now in held:
        target = np.array([("w" in now) - ("s" in now), ("l" in now) - ("j" in now),
                           ("d" in now) - ("a" in now), ("i" in now) - ("k" in now)], dtype=np.float64)  # fmt: skip
        target *= [speed, speed, rate, rate]
        if now - previous:  # a key went down: its motion starts at once
            velocity = target
        else:
            tau = np.where(np.abs(target) > 1e-12, TAU_PRESS, TAU_COAST)
            velocity = velocity + (1.0 - np.exp(-dt / tau)) * (target - velocity)
        previous = now
        new_pitch = min(limit, max(-limit, pitch + velocity[3]))
        step, pitch = new_pitch - pitch, new_pitch
        rot = _rot_y_np(velocity[2]) @ rot @ _rot_x_np(step)
        ground = rot[:, [2, 0]].copy()  # forward and right axes of the new orientation
        ground[1] = 0.0
        norms = np.linalg.norm(ground, axis=0)
        ground = np.where(norms > 0, ground / (norms + _V2_NORM_EPS), ground)
        position = position + ground @ velocity[:2]
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rot, position
        poses.append(pose)
    return torch.from_numpy(np.stack(poses)).float()


def _rot_x_np(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y_np(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(angle: torch.Tensor) -> torch.Tensor:
    """Rotations about x by ``angle`` (radians), shape ``(N, 3, 3)``."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([one, zero, zero, zero, c, -s, zero, s, c], dim=-1).reshape(-1, 3, 3)


def _rot_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotations about y by ``angle`` (radians), shape ``(N, 3, 3)``."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=-1).reshape(-1, 3, 3)


def _ground_unit(vectors: torch.Tensor) -> torch.Tensor:
    """Project ``(N, 3)`` vectors on the x-z plane and normalise; a vertical vector gives zero motion."""
    flat = vectors.clone()
    flat[:, 1] = 0.0
    norm = flat.norm(dim=-1, keepdim=True)
    return torch.where(norm > 1e-12, flat / norm.clamp_min(1e-12), torch.zeros_like(flat))
