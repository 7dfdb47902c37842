"""The action language: reference rollouts (fixture), an independent float64 loop, and bad strings."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from sanawm.camera import action_to_c2w, parse_action
from sanawm.errors import UserInputError

DATA = Path(__file__).parent / "data" / "camera"
CASES = json.loads((DATA / "public_camera.json").read_text())
TENSORS = load_file(DATA / "public_camera.safetensors")


@pytest.mark.parametrize("name", [k for k in CASES if k.startswith("c2w_")])
def test_matches_reference_rollouts(name):
    case = CASES[name]
    got = action_to_c2w(
        case["action"], case["translation_speed"], case["rotation_speed_deg"], case["pitch_limit_deg"]
    )
    assert got.dtype.is_floating_point and str(got.dtype) == "torch.float32"
    np.testing.assert_allclose(got.numpy(), TENSORS[name], atol=1e-5, rtol=0)


def _naive_rollout(action, speed, rot_deg, limit_deg):
    """Frame-by-frame integration with explicit incremental rotations, float64."""

    def rx(a):
        return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])

    def ry(a):
        return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])

    rot, pos, pitch = np.eye(3), np.zeros(3), 0
    poses = [np.eye(4)]
    for part in action.split(","):
        keys, n = part.split("-")
        for _ in range(int(n)):
            dp = ("i" in keys) - ("k" in keys)
            if abs(pitch + dp) * rot_deg > limit_deg + 1e-9:
                dp = 0
            pitch += dp
            dy = ("l" in keys) - ("j" in keys)
            rot = ry(math.radians(rot_deg * dy)) @ rot @ rx(math.radians(rot_deg * dp))
            fwd = rot[:, 2] * [1, 0, 1]
            right = rot[:, 0] * [1, 0, 1]
            fwd, right = fwd / np.linalg.norm(fwd), right / np.linalg.norm(right)
            pos = pos + speed * ((("w" in keys) - ("s" in keys)) * fwd + (("d" in keys) - ("a" in keys)) * right)
            pose = np.eye(4)
            pose[:3, :3], pose[:3, 3] = rot, pos
            poses.append(pose)
    return np.stack(poses)


def test_matches_naive_incremental_rollout():
    action = "wl-30,ik-3,iw-20,kd-15,jsa-25,i-80,w-5"
    got = action_to_c2w(action, 0.07, 1.7, 60.0).double().numpy()
    np.testing.assert_allclose(got, _naive_rollout(action, 0.07, 1.7, 60.0), atol=2e-6)


def test_analytic_walk_turn_and_axes():
    c2w = action_to_c2w("w-10,l-75,w-10,none-3", 0.1, 1.2).double().numpy()
    assert c2w.shape == (10 + 75 + 10 + 3 + 1, 4, 4)
    np.testing.assert_allclose(c2w[0], np.eye(4))
    np.testing.assert_allclose(c2w[10, :3, 3], [0, 0, 1.0], atol=1e-6)  # +z is forward
    # after 90 degrees of "l" the camera looks along world +x (turned right) ...
    np.testing.assert_allclose(c2w[85, :3, 2], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(c2w[95, :3, 3], [1.0, 0, 1.0], atol=1e-5)
    np.testing.assert_allclose(c2w[-1], c2w[95])  # "none" stands still
    # "i" looks up: world up is -y
    up = action_to_c2w("i-10").double().numpy()[-1, :3, 2]
    assert up[1] < 0 and up[2] > 0
    # "d" walks to the camera's right (+x), "a" to the left
    assert action_to_c2w("d-1")[-1, 0, 3] > 0 and action_to_c2w("a-1")[-1, 0, 3] < 0


def test_pitch_stops_at_limit_and_walking_stays_level():
    c2w = action_to_c2w("i-100,w-10", 0.1, 2.0, 30.0).double().numpy()
    fwd = c2w[-1, :3, 2]
    assert math.degrees(math.asin(-fwd[1])) == pytest.approx(30.0, abs=1e-4)
    step = c2w[-1, :3, 3] - c2w[-2, :3, 3]
    np.testing.assert_allclose(step, [0, 0, 0.1], atol=1e-6)  # still on the ground plane, full speed


def test_parse_is_lenient_on_spacing_and_case():
    segments = parse_action(" W-3 , dJ-2\uff0cnone-1")
    assert [(sorted(s.keys), s.frames) for s in segments] == [(["w"], 3), (["d", "j"], 2), ([], 1)]


@pytest.mark.parametrize(
    "action, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("w-3,,d-2", "segment 2 is empty"),
        ("w-3,", "segment 2 is empty"),
        ("x-5", "'x-5'"),
        ("wq-5", "'q'"),
        ("w-0", "'w-0'"),
        ("w--3", "'w--3'"),
        ("w-2.5", "'2.5'"),
        ("w-abc", "'w-abc'"),
        ("w5", "'w5'"),
        ("-5", "no keys"),
        ("ww-3", "twice"),
        ("w-3-4", "'w-3-4'"),
        ("none-", "'none-'"),
    ],
)
def test_bad_action_strings_name_the_segment(action, fragment):
    with pytest.raises(UserInputError) as info:
        action_to_c2w(action)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"translation_speed": -1}, {"rotation_speed_deg": float("nan")}, {"pitch_limit_deg": 95}]
)
def test_bad_speeds(kwargs):
    with pytest.raises(UserInputError):
        action_to_c2w("w-1", **kwargs)
