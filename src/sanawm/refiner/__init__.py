"""SANA-WM stage 2: the LTX-2 refiner (sliding-window block refinement of stage-1 latents)."""

from sanawm.refiner.refine import DISTILLED_SIGMAS, RefineSettings, StreamingRefiner, refine_latents

__all__ = ["DISTILLED_SIGMAS", "RefineSettings", "StreamingRefiner", "refine_latents"]
