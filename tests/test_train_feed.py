"""The clip feed: draw order across ranks and workers, the replay pool, restarting mid-run."""

import pytest
import torch

from sanawm.errors import UserInputError
from sanawm.train.data import Clip, ClipBatch
from sanawm.train.feed import ClipFeed


class _NumberedClips:
    """A cheap source whose clip `d` is filled with the number d (module level: picklable)."""

    def prepare(self, draw: int) -> Clip:
        return Clip(c2w=torch.eye(4)[None], intrinsics=torch.ones(1, 4), video=torch.full((1, 1, 1, 3), draw, dtype=torch.int64))

    def finish(self, clips, device):
        return ClipBatch(torch.stack([c.video for c in clips]), torch.stack([c.c2w for c in clips]),
                         torch.stack([c.intrinsics for c in clips]))  # fmt: skip


def _encode(batch):
    return {"draw": batch.video[:, 0, 0, 0, 0]}


def _feed(**kw):
    args = dict(batch_size=3, device=torch.device("cpu"))
    args.update(kw)
    return ClipFeed(_NumberedClips(), _encode, **args)


def _gen(step):
    return torch.Generator().manual_seed(1000 + step)


def test_fresh_batches_follow_the_draw_order_of_each_rank():
    for workers in (0, 2):
        feed = _feed(workers=workers, rank=1, world_size=2)
        draws = [feed.batch(s, _gen(s))["draw"].tolist() for s in range(3)]
        assert draws == [[1, 3, 5], [7, 9, 11], [13, 15, 17]]  # rank 1 of 2: odd draws, in order
        feed.close()


def test_pool_holds_the_latest_items_and_samples_from_them():
    feed = _feed(pool_size=4, fresh_per_step=2)
    for step in range(5):
        batch = feed.batch(step, _gen(step))["draw"]
        # Before the step the pool held items [2s, 2s + 4); the step added two more.
        assert set(feed._pool["draw"].tolist()) == set(range(2 * step + 2, 2 * step + 6))
        assert set(batch.tolist()) <= set(range(2 * step + 2, 2 * step + 6))
    assert feed.clips_loaded == 4 + 5 * 2


def test_restarting_at_a_step_reproduces_the_batches():
    for kw in (dict(pool_size=5, fresh_per_step=1), dict()):
        straight = _feed(**kw)
        full = [straight.batch(s, _gen(s))["draw"].tolist() for s in range(6)]
        resumed = _feed(**kw)
        tail = [resumed.batch(s, _gen(s))["draw"].tolist() for s in range(3, 6)]
        assert tail == full[3:]


class _BrokenClips(_NumberedClips):
    def prepare(self, draw: int) -> Clip:
        if draw == 2:
            raise UserInputError("clip 2 is broken")
        return super().prepare(draw)


def test_user_errors_in_workers_arrive_as_one_line():
    for workers in (0, 2):
        feed = ClipFeed(_BrokenClips(), _encode, batch_size=3, device=torch.device("cpu"), workers=workers)
        with pytest.raises(UserInputError) as info:
            feed.batch(0, _gen(0))
        assert str(info.value) == "clip 2 is broken"
        feed.close()


def test_two_ranks_together_see_the_batches_of_one():
    """Global batch 4: one rank of batch 4 against two ranks of batch 2 (positions interleaved),
    with and without a pool, an odd number of fresh clips per step, and restarts mid-run."""
    for kw in (dict(pool_size=8, fresh_per_step=3), dict(pool_size=4, fresh_per_step=0), dict()):
        one = _feed(batch_size=4, seed=5, **kw)
        ranks = [_feed(batch_size=2, seed=5, rank=r, world_size=2, **kw) for r in range(2)]
        for step in list(range(5)) + [9, 10]:  # 9: a restart (the pool is refilled)
            single = one.batch(step)
            halves = [feed.batch(step) for feed in ranks]
            for key in ("draw", "sample_seed"):
                merged = torch.stack([halves[0][key], halves[1][key]], dim=1).flatten()  # positions 0, 1, 2, 3
                assert merged.tolist() == single[key].tolist(), (kw, step, key)
            assert len(set(single["draw"].tolist())) == 4  # stratified: no clip twice in a step
        assert len(set(one.batch(11)["sample_seed"].tolist())) == 4


def test_pool_must_split_over_the_ranks():
    with pytest.raises(UserInputError, match="multiple"):
        _feed(batch_size=1, pool_size=3, rank=0, world_size=2)
    with pytest.raises(UserInputError, match="global batch"):
        _feed(batch_size=2, pool_size=2, rank=0, world_size=2)
