"""Sequence parallelism on two CPU processes (gloo): the model spread over both computes what
one process computes, bidirectionally, chunk-causally, and streaming with a cache."""

import datetime
import math
import os

import pytest
import torch
from _workers import free_port, spawn

from sanawm.errors import UserInputError
from sanawm.model import build_preset
from sanawm.parallel import SequenceParallel

B, T, H, W = 2, 7, 5, 4  # 5 latent rows over 2 ranks: uneven bands (3 + 2)
CHUNK = 2  # chunk starts [0, 3, 5]
TOLERANCE = 1e-5  # relative, float32


def _model():
    """tiny preset (4 blocks, softmax block 3, 2 heads), every weight moved off its init."""
    torch.manual_seed(0)
    m = build_preset("tiny", softmax_attn_dtype=None)
    m.init_weights()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _raymap(g: torch.Generator) -> torch.Tensor:
    rows = []
    for _ in range(B * T):
        axis = torch.randn(3, generator=g)
        axis = axis / axis.norm()
        angle = 0.3 * float(torch.rand((), generator=g))
        K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        c2w = torch.eye(4)
        c2w[:3, :3] = torch.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K
        c2w[:3, 3] = torch.randn(3, generator=g)
        rows.append(torch.cat([c2w.flatten(), torch.tensor([3.0, 3.5, (W - 1) / 2, (H - 1) / 2])]))
    return torch.stack(rows).reshape(B, T, 20)


def _inputs(cfg) -> dict:
    g = torch.Generator().manual_seed(1)
    ts = 1000 * torch.rand(B, T, generator=g)
    ts[:, 0] = 0
    mask = torch.ones(B, 5, dtype=torch.int64)
    mask[1, 3:] = 0
    return dict(
        latents=torch.randn(B, cfg.in_channels, T, H, W, generator=g),
        timestep=ts,
        text=torch.randn(B, 5, cfg.caption_channels, generator=g),
        text_mask=mask,
        raymap=_raymap(g),
        chunk_plucker=torch.randn(B, cfg.plucker_channels, T, H, W, generator=g),
    )


def _chunk(inputs: dict, start: int, stop: int) -> dict:
    out = dict(inputs)
    out["latents"] = inputs["latents"][:, :, start:stop]
    out["timestep"] = inputs["timestep"][:, start:stop]
    out["raymap"] = inputs["raymap"][:, start:stop]
    out["chunk_plucker"] = inputs["chunk_plucker"][:, :, start:stop]
    return out


SPANS = [(0, 3), (3, 5), (5, 7)]  # the chunks of chunk_size CHUNK


def _outputs(model) -> dict:
    """Bidirectional, one-shot chunk-causal, and streamed chunk by chunk (each chunk read
    twice from the cache, as the sampler does, then committed)."""
    inputs = _inputs(model.config)
    out = {"bidirectional": model(**inputs), "no_camera": model(inputs["latents"], inputs["timestep"], inputs["text"])}
    out["chunk_causal"] = model(**inputs, chunk_size=CHUNK)
    cache = model.new_stream_cache()
    streamed = []
    for start, stop in SPANS:
        part = _chunk(inputs, start, stop)
        model(**part, cache=cache)
        streamed.append(model(**part, cache=cache))
        model.commit_to_cache(cache, **part)
    out["streaming"] = torch.cat(streamed, dim=2)
    out["cache_heads"] = [p.attn.state.kv.shape[1] if hasattr(p.attn, "state") else p.attn.k.shape[1]
                          for p in cache.blocks]  # fmt: skip
    return out


def _worker(rank: int, world: int, port: int, out_dir) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import torch.distributed as dist

    # A bounded timeout: a collective one rank never joins fails the test instead of hanging CI.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=180))
    sp = SequenceParallel.init("cpu")
    model = _model()
    model.sequence_parallel = sp
    with torch.no_grad():
        torch.save(_outputs(model), out_dir / f"rank{rank}.pt")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_two_processes_compute_the_single_process_forward(tmp_path):
    spawn(_worker, 2, free_port(), tmp_path)
    with torch.no_grad():
        want = _outputs(_model())
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in ("bidirectional", "no_camera", "chunk_causal", "streaming"):
        assert want[name].shape == (B, 16, T, H, W)
        # every rank ends with the same full output
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        assert _relative(ranks[0][name], want[name]) < TOLERANCE, (name, _relative(ranks[0][name], want[name]))
    # the modes really differ, so the comparisons above test each of them
    assert _relative(want["chunk_causal"], want["bidirectional"]) > 1e-3
    assert _relative(want["streaming"], want["chunk_causal"]) < TOLERANCE
    # each rank's stream cache holds its own head (2 heads over 2 ranks)
    assert want["cache_heads"] == [2] * 4 and ranks[0]["cache_heads"] == [1] * 4


def test_heads_must_divide_over_the_processes():
    cfg = build_preset("tiny", device="meta").config  # 2 heads
    with pytest.raises(UserInputError, match="2 heads .* not divisible by 3 processes; use 2 processes"):
        SequenceParallel(None, 0, 3).check(cfg)
    with pytest.raises(UserInputError, match="4 latent rows for 5 processes"):
        SequenceParallel(None, 0, 5).check(build_preset("sanawm-2.6b", device="meta").config, latent_height=4)
    SequenceParallel(None, 0, 5).check(build_preset("sanawm-2.6b", device="meta").config, latent_height=22)
