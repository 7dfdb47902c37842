"""`WorldModel.stream` sessions: open-ended generation, camera commands between chunks, the
bounded attention window."""

import itertools

import numpy as np
import pytest
import torch
from _tiny_models import make_text_free_model_dir

from sanawm import StreamChunk, StreamSession
from sanawm.camera import action_to_c2w
from sanawm.errors import UserInputError
from sanawm.pipeline import WorldModel
from sanawm.streaming import continue_motion

IMAGE = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
STRIDE = 4  # the tiny model: chunk_size 1 -> chunks of 1 + 4 frames, then 4 frames


@pytest.fixture(scope="module")
def wm(tmp_path_factory):
    return WorldModel.load(make_text_free_model_dir(tmp_path_factory.mktemp("models") / "m"), device="cpu")


def take(session, n):
    return list(itertools.islice(session, n))


def test_open_ended_stream_goes_on_and_chunks_follow_each_other(wm):
    session = wm.stream(IMAGE, action="w-6", seed=1)
    assert isinstance(session, StreamSession) and session.fps == 8 and session.image_size == (32, 48)
    chunks = take(session, 5)  # 21 frames, beyond the 7 poses of the action
    assert all(isinstance(c, StreamChunk) for c in chunks)
    assert [c.start for c in chunks] == [0, 5, 9, 13, 17]
    assert [c.frames.shape for c in chunks] == [(5, 32, 48, 3)] + [(4, 32, 48, 3)] * 4
    c2w = np.concatenate([c.c2w for c in chunks])
    np.testing.assert_allclose(c2w[:7], action_to_c2w("w-6").double().numpy())
    np.testing.assert_array_equal(c2w[7:], np.broadcast_to(c2w[6], (14, 4, 4)))  # then it holds still
    assert all(c.intrinsics.shape == (c.frames.shape[0], 4) for c in chunks)
    session.close()
    assert take(session, 1) == []


def test_pushed_action_continues_from_the_last_generated_pose(wm):
    session = wm.stream(IMAGE, action="w-20", seed=2)
    first = next(session)  # frames 0..4
    session.push_action("l-6,w-1")  # replaces what is left of w-20
    c2w = np.concatenate([first.c2w] + [c.c2w for c in take(session, 2)])
    expected = action_to_c2w("w-4,l-6,w-1").double().numpy()  # the same motion in one rollout
    np.testing.assert_allclose(c2w[:12], expected, atol=1e-6)
    np.testing.assert_array_equal(c2w[12], c2w[11])  # then it holds still


def test_pushed_poses_are_relative_to_the_last_generated_pose(wm):
    session = wm.stream(IMAGE, action="w-4,l-4", seed=3)
    first = next(session)
    rel = action_to_c2w("d-4").double()[1:]  # 4 poses: one chunk
    session.push_poses(rel)
    second = next(session)
    np.testing.assert_allclose(second.c2w, first.c2w[-1] @ rel.numpy())


@pytest.mark.parametrize(
    "before, after",
    [("w-3,l-2", "w-5,l-5"), ("i-3,w-2,j-4", "l-4,w-3,k-5,d-2"), ("none-2", "s-3,a-2")],
)
def test_continue_motion_matches_one_rollout(before, after):
    first, second = action_to_c2w(before).double(), action_to_c2w(after).double()
    joined = action_to_c2w(f"{before},{after}").double()
    torch.testing.assert_close(continue_motion(first[-1], second), joined[first.shape[0] - 1 :], atol=1e-6, rtol=0)


def test_bad_commands_are_user_errors(wm):
    session = wm.stream(IMAGE, seed=0)
    with pytest.raises(UserInputError, match="action"):
        session.push_action("q-3")
    with pytest.raises(UserInputError, match="poses"):
        session.push_poses(np.ones((2, 4, 4)))
    for window, sink in [(-1, None), ("all", None), (1.5, None), (None, -2), (True, None)]:
        with pytest.raises(UserInputError, match="window|sink"):
            wm.stream(IMAGE, window=window, sink=sink)


def test_frames_stop_the_stream_and_a_short_action_holds_still(wm):
    chunks = list(wm.stream(IMAGE, action="w-3", frames=14, seed=4))  # rounded down to 13
    assert sum(c.frames.shape[0] for c in chunks) == 13
    c2w = np.concatenate([c.c2w for c in chunks])
    np.testing.assert_allclose(c2w[:4], action_to_c2w("w-3").double().numpy())
    np.testing.assert_array_equal(c2w[4:], np.broadcast_to(c2w[3], (9, 4, 4)))


def test_window_longer_than_the_clip_is_the_unbounded_stream(wm):
    def clip(**window):
        chunks = wm.stream(IMAGE, action="w-8,l-12", frames=21, seed=5, **window)
        return np.concatenate([c.frames for c in chunks])

    full = clip(window="full")
    np.testing.assert_array_equal(clip(window=5, sink=0), full)  # 5 chunks: the whole clip
    # A short window changes what later chunks see (the first two chunks are the same).
    short = clip(window=1, sink=1)
    np.testing.assert_array_equal(short[:9], full[:9])
    assert np.abs(short[9:].astype(int) - full[9:].astype(int)).max() > 0


def test_window_keeps_the_cache_bounded(wm):
    session = wm.stream(IMAGE, seed=6, window=2, sink=1)
    sizes = []
    for _ in itertools.islice(session, 6):
        (cache,) = session._sampler.caches
        sizes.append(cache.softmax_numel())
    # chunk_size 1: chunks of 2, 1, 1, ... latent frames; held: frame 0 (sink) + last 2 chunks
    assert cache.held_frames == [0, 5, 6]
    assert sizes[3:] == [sizes[2]] * 3 and sizes[0] < sizes[2]
