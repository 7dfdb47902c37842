"""Warm start of a DiT across VAEs (`sanawm.train.dit.warm_start`): the orthogonal latent map
against numpy, the mapped model against the old one run on mapped latents, and the DiT task."""

import numpy as np
import pytest
import torch
from _train_fixtures import TINY_DIT, dit_config, save_tiny_vae, write_clip_folder
from safetensors.torch import load_file

from sanawm.camera import pack_camera
from sanawm.errors import UserInputError
from sanawm.model import SanaWMTransformer, preset_config
from sanawm.train import train
from sanawm.train.dit import DiTTask, fit_latent_map, map_latent_layers
from sanawm.train.distributed import setup
from sanawm.train.objective import text_inputs
from sanawm.vae import CompactVAE, CompactVAEConfig


def _tiny_dit(channels: int, seed: int) -> SanaWMTransformer:
    overrides = {**TINY_DIT, "softmax_blocks": tuple(TINY_DIT["softmax_blocks"]), "in_channels": channels,
                 "plucker_channels": 24}  # fmt: skip
    torch.manual_seed(seed)
    model = SanaWMTransformer(preset_config("tiny", **overrides))
    model.init_weights()
    with torch.no_grad():  # trained-looking weights: nothing zero, so every path counts
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_fit_latent_map_is_the_polar_factor_of_numpy_least_squares():
    rng = np.random.default_rng(0)
    new = rng.normal(size=(2, 6, 3, 4, 4))
    old = rng.normal(size=(2, 4, 3, 4, 4)) + 0.5 * new[:, :4]
    Q, a = fit_latent_map(torch.from_numpy(new).float(), torch.from_numpy(old).float())
    x = np.moveaxis(new.astype(np.float32), 1, -1).reshape(-1, 6).astype(np.float64)
    y = np.moveaxis(old.astype(np.float32), 1, -1).reshape(-1, 4).astype(np.float64)
    A = np.linalg.lstsq(np.concatenate([x, np.ones((len(x), 1))], 1), y, rcond=None)[0][:-1].T
    u, _, vh = np.linalg.svd(A, full_matrices=False)
    np.testing.assert_allclose(Q.numpy(), u @ vh, atol=1e-10)
    np.testing.assert_allclose((Q @ Q.T).numpy(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(a.numpy(), y.mean(0) - (u @ vh) @ x.mean(0), atol=1e-10)
    # A semi-orthogonal affine relation is recovered exactly.
    true_Q = np.linalg.qr(rng.normal(size=(6, 4)))[0].T
    true_a = rng.normal(size=4)
    exact = np.einsum("oc,bcthw->bothw", true_Q, new) + true_a[:, None, None, None]
    Q, a = fit_latent_map(torch.from_numpy(new), torch.from_numpy(exact))
    np.testing.assert_allclose(Q.numpy(), true_Q, atol=1e-9)
    np.testing.assert_allclose(a.numpy(), true_a, atol=1e-9)


def test_mapped_dit_is_the_old_dit_read_and_written_through_the_map():
    old, new = _tiny_dit(4, seed=0), _tiny_dit(6, seed=1)
    g = torch.Generator().manual_seed(2)
    A, a = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    map_latent_layers(new, old, A, a)
    for name, value in old.state_dict().items():
        if not name.startswith(("x_embedder.", "final_layer.linear.")):
            assert torch.equal(new.state_dict()[name], value), name

    latents = torch.randn(1, 6, 3, 2, 2, generator=g)
    c2w = torch.eye(4).repeat(9, 1, 1)
    c2w[:, 0, 3] = torch.linspace(0, 0.4, 9)
    raymap, plucker = pack_camera(c2w, [1.0, 1.0, 0.5, 0.5], (16, 16), (4, 8, 8))
    text, mask = text_inputs(old.null_text(), 1)
    t = torch.tensor([[0.0, 400.0, 700.0]])
    with torch.no_grad():
        got = new(latents, t, text, mask, raymap[None], plucker[None]).double()
        mapped_in = (torch.einsum("oc,bcthw->bothw", A, latents.double()) + a[:, None, None, None]).float()
        v_old = old(mapped_in, t, text, mask, raymap[None], plucker[None]).double()
    # Reference: the old model's output in its own latents, taken back through numpy's pseudo-inverse.
    pinv = torch.from_numpy(np.linalg.pinv(A.numpy()))
    want = torch.einsum("co,bothw->bcthw", pinv, v_old + a[:, None, None, None])
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    assert (want - torch.einsum("co,bothw->bcthw", pinv, v_old)).abs().max() > 1e-2  # the offset matters


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    clips = write_clip_folder(root / "clips")
    old_vae = save_tiny_vae(root / "vae4")
    torch.manual_seed(1)
    wide = CompactVAE(CompactVAEConfig(latent_channels=8, channels=(8, 8, 8)))
    wide.save(root / "vae8")
    data = {"source": "folder", "folder": {"root": str(clips)}, "pool_size": 2}
    train(dit_config(old_vae, data=data, run={"steps": 1, "progress": False}), root / "old")
    train(dit_config(root / "vae8", data=data, run={"steps": 1, "progress": False}), root / "wide")
    return {"clips": clips, "vae8": root / "vae8", "old_vae": old_vae, "old": root / "old" / "model",
            "wide": root / "wide" / "model", "data": data}  # fmt: skip


def test_dit_task_warm_starts_across_vaes(folders):
    exported = load_file(str(folders["old"] / "transformer" / "model.safetensors"))
    tasks = {}
    for clips in (0, 3):
        cfg = dit_config(folders["vae8"], data=folders["data"],
                         dit={"init_from": str(folders["old"]), "init_map_clips": clips})  # fmt: skip
        tasks[clips] = DiTTask(cfg, setup("cpu"))
    fresh = DiTTask(dit_config(folders["vae8"], data=folders["data"]), setup("cpu"))
    assert "mapped orthogonally, fitted on 3 clips (4 -> 8" in tasks[3].warm_start
    assert "re-initialised" in tasks[0].warm_start
    for name, value in exported.items():
        for task in tasks.values():
            state = task.module.state_dict()
            if not name.startswith(("x_embedder.", "final_layer.linear.")):
                assert torch.equal(state[name], value.float()), name
    # Re-initialised: exactly a fresh model's layers. Mapped: the embedding is W_old A, of rank 4.
    for name in ("x_embedder.proj.weight", "final_layer.linear.weight"):
        assert torch.equal(tasks[0].module.state_dict()[name], fresh.module.state_dict()[name])
    w_in = tasks[3].module.x_embedder.proj.weight.flatten(1)
    assert w_in.shape == (64, 8) and torch.linalg.matrix_rank(w_in.double(), rtol=1e-5) == 4
    w_out = tasks[3].module.final_layer.linear.weight
    assert w_out.shape == (8, 64) and torch.linalg.matrix_rank(w_out.double(), rtol=1e-5) == 4


def test_warm_start_refuses_another_architecture(folders):
    deeper = {**TINY_DIT, "depth": 3}
    cfg = dit_config(folders["vae8"], data=folders["data"], dit={"init_from": str(folders["old"]), "overrides": deeper})
    with pytest.raises(UserInputError, match="config differs"):
        DiTTask(cfg, setup("cpu"))
    cfg = dit_config(folders["vae8"], data=folders["data"],
                     dit={"init_from": str(folders["old"] / "transformer")})  # fmt: skip
    with pytest.raises(UserInputError, match="model folder"):
        DiTTask(cfg, setup("cpu"))
    # Onto narrower latents: refused (the map needs at least as many new channels as old).
    cfg = dit_config(folders["old_vae"], data=folders["data"], dit={"init_from": str(folders["wide"])})
    with pytest.raises(UserInputError, match="wider latents only"):
        DiTTask(cfg, setup("cpu"))
