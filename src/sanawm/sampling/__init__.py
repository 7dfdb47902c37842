"""Sampling: the flow-matching schedule and the bidirectional / streaming samplers."""

from sanawm.sampling.sampler import (
    Conditioning,
    ChunkSampler,
    SamplerSettings,
    StreamWindow,
    combine_guidance,
    sample_bidirectional,
    sample_streaming,
)
from sanawm.sampling.schedule import FlowMatchingSchedule

__all__ = [
    "Conditioning",
    "ChunkSampler",
    "FlowMatchingSchedule",
    "SamplerSettings",
    "StreamWindow",
    "combine_guidance",
    "sample_bidirectional",
    "sample_streaming",
]
