"""The WASD/IJKL action language: keyboard-style commands rolled out into a camera trajectory.

An action string is a comma-separated list of segments ``<keys>-<frames>``, e.g.
``"w-100,dw-60,none-10"``: hold the keys for that many frames. Keys (case-insensitive):

* ``w`` / ``s``: move forward / back, ``a`` / ``d``: move left / right. Motion is along the
  camera's forward (+z) and right (+x) axes projected on the ground (world x-z) plane and
  normalised, so looking up or down does not slow walking; ``translation_speed`` per frame.
* ``i`` / ``k``: pitch up / down about the camera x axis, ``rotation_speed_deg`` per frame.
  A step that would take the pitch beyond +-``pitch_limit_deg`` is skipped (reaching the limit
  exactly is allowed).
* ``j`` / ``l``: yaw left / right about the world y axis.
* ``none``: stand still.

Keys held together add up (``wd`` walks diagonally, ``ws`` cancels). Whitespace is ignored and a
full-width comma counts as a comma.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from sanawm.errors import UserInputError

ACTION_KEYS = "wasdijkl"
_DURATION = re.compile(r"[0-9]+")


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
    translation_speed: float = 0.05,
    rotation_speed_deg: float = 1.2,
    pitch_limit_deg: float = 85.0,
) -> torch.Tensor:
    """Roll out an action string into camera-to-world poses.

    Returns a float32 CPU tensor ``(N + 1, 4, 4)`` where N is the total number of frames in the
    string; pose 0 is the identity (the input image's camera), pose n the camera after n frames.
    """
    for value, label in (
        (translation_speed, "translation_speed"),
        (rotation_speed_deg, "rotation_speed_deg"),
    ):
        if not math.isfinite(value) or value < 0:
            raise UserInputError(f"{label} must be a finite number >= 0, got {value}")
    if not 0 <= pitch_limit_deg <= 90:
        raise UserInputError(f"pitch_limit_deg must be within [0, 90], got {pitch_limit_deg}")

    held = [seg.keys for seg in parse_action(action) for _ in range(seg.frames)]

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
