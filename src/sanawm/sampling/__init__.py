"""Sampling: the flow-matching schedule and the bidirectional / streaming samplers."""

from sanawm.sampling.sampler import (
    Conditioning,
    ChunkSampler,
    SamplerSettings,
    StreamWindow,
    chunk_bounds,
    combine_guidance,
    sample_bidirectional,
    sample_streaming,
)
from sanawm.sampling.schedule import euler_step, flow_sigmas, next_sigma

__all__ = [
    "Conditioning",
    "ChunkSampler",
    "SamplerSettings",
    "StreamWindow",
    "chunk_bounds",
    "combine_guidance",
    "euler_step",
    "flow_sigmas",
    "next_sigma",
    "sample_bidirectional",
    "sample_streaming",
]
