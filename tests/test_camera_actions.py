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


# ---- the v2 key layout (a/d yaw, j/l strafe, smoothed velocities) ----------------------------

COAST = math.exp(-1 / 16)  # one frame of easing towards zero (time constant 1 s at 16 fps)
PRESS = math.exp(-1 / (16 * 0.45))  # one frame of easing towards a held key's speed (0.45 s)
SHRINK = 1 / (1 + 1e-6)  # the release divides ground directions by (norm + 1e-6)


def _heading(theta):
    """Ground-plane forward and right of a camera yawed by theta (right-handed about +y)."""
    return np.array([math.sin(theta), 0, math.cos(theta)]), np.array([math.cos(theta), 0, -math.sin(theta)])


def test_v2_keys_swap_yaw_and_strafe():
    r = math.radians(0.6)
    turned = action_to_c2w("a-1", keys="v2").double().numpy()[1]
    np.testing.assert_allclose(turned[:3, 2], [math.sin(-r), 0, math.cos(-r)], atol=1e-7)  # a: yaw left
    np.testing.assert_allclose(turned[:3, 3], 0, atol=1e-9)
    strafe = action_to_c2w("l-2", keys="v2").double().numpy()
    np.testing.assert_allclose(strafe[:, :3, :3], np.tile(np.eye(3), (3, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(strafe[:, 0, 3], [0, 0.025 * SHRINK, 0.05 * SHRINK], atol=1e-8)  # l: right
    # v1 keeps the old meaning of the same string
    assert action_to_c2w("l-2")[-1, 0, 3] == 0 and action_to_c2w("l-2")[-1, 0, 2] > 0.04


def test_v2_released_keys_coast_to_a_stop():
    c2w = action_to_c2w("w-1,none-3", 0.1, keys="v2").double().numpy()
    steps = 0.1 * np.array([1, COAST, COAST**2, COAST**3]) * SHRINK
    np.testing.assert_allclose(c2w[1:, 2, 3], np.cumsum(steps), atol=1e-7)
    # a fresh press snaps back to full speed
    again = action_to_c2w("w-1,none-1,w-2", 0.1, keys="v2").double().numpy()
    np.testing.assert_allclose(np.diff(again[:, 2, 3]), 0.1 * np.array([1, COAST, 1, 1]) * SHRINK, atol=1e-7)


def test_v2_walk_while_yaw_coasts():
    # frame 1: w and a pressed together; then only w: yaw speed decays, forward speed holds
    s, r = 0.1, math.radians(2.0)
    c2w = action_to_c2w("wa-1,w-2", s, 2.0, keys="v2").double().numpy()
    yaw_speed = -r * np.array([1, COAST, COAST**2])
    theta = np.cumsum(yaw_speed)
    position = np.zeros(3)
    for i, t in enumerate(theta):
        forward, right = _heading(t)
        position = position + s * SHRINK * forward
        np.testing.assert_allclose(c2w[i + 1, :3, 2], forward, atol=1e-7)
        np.testing.assert_allclose(c2w[i + 1, :3, 0], right, atol=1e-7)
        np.testing.assert_allclose(c2w[i + 1, :3, 3], position, atol=1e-7)


def test_v2_eases_towards_a_held_key_after_a_release_of_another():
    # j+w pressed, then w released while j stays: no new key, so strafe holds and forward coasts;
    # then w pressed again: everything snaps to its target.
    c2w = action_to_c2w("jw-1,j-1,jw-1", 0.1, keys="v2").double().numpy()
    np.testing.assert_allclose(np.diff(c2w[:, 0, 3]), -0.1 * SHRINK * np.ones(3), atol=1e-7)
    np.testing.assert_allclose(np.diff(c2w[:, 2, 3]), 0.1 * SHRINK * np.array([1, COAST, 1]), atol=1e-7)
    # a held key whose speed was lowered by coasting eases back up with the press constant
    eased = action_to_c2w("w-1,none-1,ws-1,w-1", 0.1, keys="v2").double().numpy()
    v2 = 0.1 * COAST
    v3 = 0.0  # w+s is a fresh press (s is new): snap to the target 0
    v4 = v3 + (1 - PRESS) * (0.1 - v3)  # w alone, nothing new: ease towards 0.1
    np.testing.assert_allclose(np.diff(eased[:, 2, 3]), SHRINK * np.array([0.1, v2, v3, v4]), atol=1e-7)


def test_v2_pitch_is_clamped_not_skipped():
    # 0.7 degrees per frame: 85 frames reach 59.5; the 86th is clamped to 60 (v1 skips it)
    v2 = action_to_c2w("i-90", 0, 0.7, 60.0, keys="v2").double().numpy()[-1, :3, 2]
    v1 = action_to_c2w("i-90", 0, 0.7, 60.0).double().numpy()[-1, :3, 2]
    np.testing.assert_allclose(math.degrees(math.atan2(-v2[1], v2[2])), 60.0, atol=1e-6)
    np.testing.assert_allclose(math.degrees(math.atan2(-v1[1], v1[2])), 59.5, atol=1e-6)


def test_v2_defaults_and_unknown_layout():
    default = action_to_c2w("w-1", keys="v2").double().numpy()
    np.testing.assert_allclose(default[1, 2, 3], 0.025 * SHRINK, atol=1e-8)
    with pytest.raises(UserInputError, match="unknown key layout 'v3'"):
        action_to_c2w("w-1", keys="v3")
