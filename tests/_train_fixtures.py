"""Small shared pieces for the training tests: a tiny VAE folder, a folder of clips, configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from sanawm.camera import save_camera_npz
from sanawm.train import TrainConfig, from_dict
from sanawm.vae import CompactVAE, CompactVAEConfig
from sanawm.video import write_video

# A 2-block DiT (one GDN, one softmax block) of width 64: trains on a CPU in well under a second per step.
TINY_DIT = {"depth": 2, "softmax_blocks": [1], "hidden_size": 64, "head_dim": 32, "caption_channels": 8, "max_text_len": 3}
TINY_VAE = {"latent_channels": 4, "channels": [8, 8, 8]}


def save_tiny_vae(path: Path) -> Path:
    """A random compact VAE (strides 4, 8, 8; 4 latent channels) with latent stats, saved."""
    torch.manual_seed(0)
    vae = CompactVAE(CompactVAEConfig(latent_channels=4, channels=(8, 8, 8)))
    vae.set_latent_stats(torch.tensor([0.1, -0.2, 0.0, 0.3]), torch.tensor([0.5, 0.4, 0.6, 0.5]))
    vae.save(path)
    return path


def write_clip_folder(path: Path, clips: int = 3, frames: int = 13, size: tuple[int, int] = (24, 40)) -> Path:
    """`clips` short videos of moving colour blobs with smooth cameras (.camera.npz) and, for
    the first clip, a text sidecar of width 8."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(clips):
        video = np.zeros((frames, h, w, 3), np.uint8)
        c2w = np.tile(np.eye(4, dtype=np.float32), (frames, 1, 1))
        base = rng.uniform(0, 255, 3)
        for f in range(frames):
            cx, cy = (f * 2 + 5 * i) % w, h / 2 + 4 * math.sin(f / 3)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 30.0)
            video[f] = np.clip(base * (0.3 + 0.7 * blob[..., None]), 0, 255).astype(np.uint8)
            c2w[f, 0, 3] = 0.05 * f
            a = math.radians(1.5 * f * (i + 1))
            c2w[f, :3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        write_video(path / f"clip{i}.mp4", video, fps=8)
        save_camera_npz(path / f"clip{i}.camera.npz", c2w, [30.0, 30.0, w / 2, h / 2], size)
    save_file({"states": torch.randn(2, 8), "mask": torch.ones(2, dtype=torch.long)}, str(path / "clip0.text.safetensors"))
    return path


def dit_config(vae_dir: Path, **sections) -> TrainConfig:
    """A tiny DiT run on 16x16 clips of 9 frames (3 latent frames of 2x2); `sections` are
    config sections (dicts) merged over these defaults."""
    values = {
        "stage": "dit",
        "data": {"num_frames": 9, "height": 16, "width": 16},
        "dit": {"preset": "tiny", "vae": str(vae_dir), "overrides": TINY_DIT},
        "run": {"batch_size": 2, "log_every": 1, "checkpoint_every": 1000, "progress": False},
    }
    for name, section in sections.items():
        if isinstance(section, dict):
            values[name] = {**values.get(name, {}), **section}
        else:
            values[name] = section
    return from_dict(values)
