"""Few-step distillation on the CPU: the DMD and ODE losses against float64 references, the
self-forcing rollout (its cache holds its own outputs; it is the few-step streaming sampler),
ODE pairs (resumable), exact resume of both stages, the exported student, the CLI."""

import json

import pytest
import torch
from _tiny_models import make_text_free_model_dir, tiny_transformer
from safetensors.torch import load_file

from sanawm.chunks import chunk_spans, chunk_starts_for
from sanawm.cli import main
from sanawm.errors import UserInputError
from sanawm.modeldir import GenerationSettings
from sanawm.sampling.sampler import Conditioning, SamplerSettings, sample_streaming
from sanawm.sampling.schedule import FlowMatchingSchedule
from sanawm.train import from_dict, train
from sanawm.train.distill_dmd import dmd_gradient, dmd_loss, noised, score_sigmas
from sanawm.train.distill_ode import pick_snapshots, teacher_grid, x0_regression_loss
from sanawm.train.rollout import rollout
from sanawm.train.teacher import Condition

C, H, W = 4, 2, 2


# ---- DMD: the gradient is the KL gradient (Gaussians, float64) ---------------------------------


def _gaussian_x0(x, sigma, mean, std):
    """E[x0 | x_t] for data N(mean, std^2) per element, x_t = (1 - sigma) x0 + sigma noise."""
    var = (1 - sigma) ** 2 * std**2 + sigma**2
    return mean + (1 - sigma) * std**2 / var * (x - (1 - sigma) * mean)


def _gaussian_score(x, sigma, mean, std):
    """grad_x log p_t(x) of the noised Gaussian."""
    return -(x - (1 - sigma) * mean) / ((1 - sigma) ** 2 * std**2 + sigma**2)


def test_dmd_gradient_is_the_kl_gradient_for_gaussians():
    g = torch.Generator().manual_seed(0)
    B, T = 3, 3
    shape = (B, C, T, H, W)
    def gaussian():  # per-channel mean and std
        shape = (C, 1, 1, 1)
        return torch.randn(shape, generator=g, dtype=torch.float64), 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)

    real, fake = gaussian(), gaussian()
    generated = (fake[0] + fake[1] * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    sigma = score_sigmas(B, 10.0, (20.0, 980.0), g).double()
    x_t, levels = noised(generated.detach(), noise, sigma)
    s = levels[:, None, :, None, None]
    mask = levels > 0
    assert not mask[:, 0].any() and mask[:, 1:].all()  # frame 0 stays clean

    fake_x0, real_x0 = _gaussian_x0(x_t, s, *fake), _gaussian_x0(x_t, s, *real)
    grad = dmd_gradient(generated.detach(), fake_x0, real_x0, mask)
    # d/dx0 [log p_fake,t - log p_real,t](x_t) with x_t = (1 - s) x0 + s noise: the gradient of
    # KL(p_fake || p_real) at this sample, from the scores (not from the x0 predictions).
    kl = (1 - s) * (_gaussian_score(x_t, s, *fake) - _gaussian_score(x_t, s, *real))
    scale = torch.stack([(generated[b, :, 1:] - real_x0[b, :, 1:]).abs().mean() for b in range(B)])
    expected = kl * (s**2 / (1 - s) ** 2) / scale.view(B, 1, 1, 1, 1)  # DMD's positive per-level weight
    torch.testing.assert_close(grad[:, :, 1:], expected[:, :, 1:], rtol=1e-10, atol=1e-12)
    cos = torch.nn.functional.cosine_similarity(grad[:, :, 1:].flatten(1), kl[:, :, 1:].flatten(1))
    assert float(cos.min()) > 1 - 1e-12

    # The loss hands exactly this gradient (over N masked elements) to the generator's sample.
    loss = dmd_loss(generated, grad, mask)
    (d_generated,) = torch.autograd.grad(loss, generated)
    n = mask.sum() * C * H * W
    torch.testing.assert_close(d_generated[:, :, 1:], grad[:, :, 1:] / n, rtol=1e-12, atol=0)
    assert torch.equal(d_generated[:, :, 0], torch.zeros_like(d_generated[:, :, 0]))


def test_score_levels_follow_the_shifted_uniform_law():
    g = torch.Generator().manual_seed(1)
    sigma = score_sigmas(20000, 10.0, (20.0, 980.0), g).double()
    assert float(sigma.min()) >= 0.02 - 1e-7 and float(sigma.max()) <= 0.98 + 1e-7
    # P(sigma <= s) = P(u <= shift^-1(s)) = s / (k - (k - 1) s), clamped at the top.
    for s in (0.3, 0.6, 0.9):
        expected = s / (10 - 9 * s)
        assert abs(float((sigma <= s).double().mean()) - expected) < 0.015


# ---- ODE regression --------------------------------------------------------------------------


def test_x0_regression_loss_gradient_matches_a_float64_closed_form():
    g = torch.Generator().manual_seed(2)
    B, T = 2, 4
    noisy = torch.randn(B, C, T, H, W, generator=g, dtype=torch.float64)
    clean = torch.randn(B, C, T, H, W, generator=g, dtype=torch.float64)
    sigmas = torch.tensor([[0.0, 0.9, 0.9, 0.0], [0.0, 1.0, 0.5, 0.5]], dtype=torch.float64)
    weight = torch.randn(C, C, generator=g, dtype=torch.float64)

    w = weight.float().requires_grad_()
    velocity = torch.einsum("oc,bcthw->bothw", w, noisy.float())
    loss = x0_regression_loss(velocity, noisy.float(), sigmas.float(), clean.float())
    (grad,) = torch.autograd.grad(loss, w)

    s = sigmas[:, None, :, None, None]
    residual = noisy - s * torch.einsum("oc,bcthw->bothw", weight, noisy) - clean
    mask = (sigmas > 0).double()[:, None, :, None, None]
    count = float((sigmas > 0).sum()) * C * H * W
    ref_loss = (residual.square() * mask).sum() / count
    ref_grad = -2 * torch.einsum("bothw,bcthw->oc", residual * mask * s, noisy) / count
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


def test_snapshots_are_picked_per_chunk_with_a_clean_first_frame():
    B, K, T = 64, 5, 7
    sigmas = FlowMatchingSchedule.sigmas_from_timesteps([1000, 967, 908, 764])
    snapshots = torch.arange(K, dtype=torch.float32).view(1, K, 1, 1, 1, 1).expand(B, K, C, T, H, W).clone()
    latents, levels = pick_snapshots(snapshots, sigmas, 2, torch.Generator().manual_seed(3))
    index = latents[:, 0, :, 0, 0].long()  # (B, T): which snapshot each frame came from
    assert torch.equal(levels, sigmas[index])
    assert (index[:, 0] == K - 1).all()
    for start, stop in chunk_spans(chunk_starts_for(T, 2), T):
        first = index[:, max(start, 1)]
        assert (index[:, max(start, 1) : stop] == first[:, None]).all()
    assert set(index[:, 1:].flatten().tolist()) == set(range(K))


def test_teacher_grid_passes_through_the_student_levels():
    teacher = FlowMatchingSchedule(3.0).sampling_sigmas(6)
    student = FlowMatchingSchedule.sigmas_from_timesteps([1000, 967, 908, 764])
    grid, keep = teacher_grid(teacher, student)
    assert torch.equal(grid[keep], student) and keep[0] == 0 and keep[-1] == len(grid) - 1
    assert (grid[1:] < grid[:-1]).all()
    assert {float(s) for s in teacher} <= {float(s) for s in grid}


# ---- the rollout -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def student():
    return tiny_transformer(C, 24, 16, 4)


def _condition(model, batch, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    raymap = torch.randn(batch, frames, 20, generator=g)
    raymap[..., 16:18] = raymap[..., 16:18].abs() + 0.5  # positive focal lengths
    null = model.null_text(batch)
    return Condition(
        first=torch.randn(batch, C, 1, H, W, generator=g), text=null.states, text_mask=null.mask,
        null_text=null.states, null_mask=null.mask, has_text=False, raymap=raymap,
        plucker=torch.randn(batch, 24, frames, H, W, generator=g),
    )  # fmt: skip


def test_rollout_caches_its_own_outputs_with_gradients_at_the_exit_step_only(student, monkeypatch):
    cond = _condition(student, 2, 5)
    sigmas = FlowMatchingSchedule.sigmas_from_timesteps([1000, 900, 700])
    calls = []
    forward = student.forward

    def watch(latents, timestep, *args, update_cache=False, **kwargs):
        calls.append((latents.detach().clone(), timestep.clone(), update_cache, torch.is_grad_enabled()))
        return forward(latents, timestep, *args, update_cache=update_cache, **kwargs)

    monkeypatch.setattr(student, "forward", watch)
    out = rollout(student, cond, sigmas, exit_index=1, chunk_size=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, C, 5, H, W) and out.requires_grad
    assert torch.equal(out[:, :, :1], cond.first)  # the image frame, untouched
    # Chunks [0, 3) and [3, 5): 2 steps each (the first without gradients), a commit between.
    flags = [(c[2], c[3]) for c in calls]  # (update_cache, grad enabled)
    assert flags == [(False, False), (False, True), (True, False), (False, False), (False, True)]
    committed, timestep = calls[2][0], calls[2][1]
    assert torch.equal(committed, out[:, :, :3].detach()) and torch.equal(timestep, torch.zeros(2, 3))
    assert torch.equal(calls[0][1][:, 0], torch.zeros(2)) and (calls[0][1][:, 1:] == 1000).all()
    assert (calls[4][1] == 900).all()

    # Gradients only for the chunks in the last 2 latent frames: the first chunk only fills the cache.
    calls.clear()
    late = rollout(student, cond, sigmas, 1, 2, torch.Generator().manual_seed(0), grad_from=3)
    assert [c[3] for c in calls] == [False, False, False, False, True]
    torch.testing.assert_close(late, out.detach(), rtol=0, atol=0)

    out.square().mean().backward()
    assert all(p.grad is not None for n, p in student.named_parameters() if n.startswith("final_layer"))
    student.zero_grad(set_to_none=True)


def test_rollout_is_the_few_step_streaming_sampler(student):
    cond = _condition(student, 1, 6, seed=4)
    settings = SamplerSettings(steps=4, flow_shift=8.0, seed=9, few_step=True)
    sigmas = settings.sigmas()
    assert (1000 * sigmas).round().tolist() == [1000, 960, 889, 727, 0]  # SANA-WM's 4-step default
    with torch.no_grad():
        trained = rollout(student, cond, sigmas, exit_index=3, chunk_size=2, generator=torch.Generator().manual_seed(9))
    text = student.null_text()
    sampled = torch.cat(list(sample_streaming(
        student, Conditioning(cond.first, text, cond.raymap, cond.plucker), settings, chunk_size=2,
    )), dim=2)  # fmt: skip
    torch.testing.assert_close(trained, sampled, rtol=1e-5, atol=1e-5)


def test_student_settings_are_checked():
    with pytest.raises(UserInputError, match="steps"):
        GenerationSettings(height=16, width=16, steps=2, timesteps=[1000, 700, 400])
    with pytest.raises(UserInputError, match="timesteps"):
        GenerationSettings(height=16, width=16, steps=2, timesteps=[900, 400])
    settings = GenerationSettings(height=16, width=16, steps=3, timesteps=[1000, 700, 400])
    assert settings.timesteps == (1000.0, 700.0, 400.0)


# ---- the stages end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_text_free_model_dir(tmp_path_factory.mktemp("teacher") / "model", chunk_size=1, camera_cfg=2.0)


def _config(teacher, stage, steps, **distill):
    return from_dict({
        "stage": stage,
        "data": {"num_frames": 9, "height": 16, "width": 16, "pool_size": 2, "fresh_per_step": 0},
        "optim": {"lr": 1e-3, "warmup_steps": 1, "betas": [0.0, 0.999]},
        "run": {"batch_size": 2, "log_every": 1, "progress": False, "steps": steps, "checkpoint_every": 1000},
        "distill": {"teacher": str(teacher), "pairs": 3, "teacher_steps": 3, "critic_lr": 1e-3, **distill},
    })  # fmt: skip


def _same_checkpoints(a, b, step):
    for name in ("model.safetensors", "ema.safetensors"):
        x = load_file(str(a / "checkpoints" / f"step_{step:07d}" / name))
        y = load_file(str(b / "checkpoints" / f"step_{step:07d}" / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def test_ode_pairs_resume_and_the_ode_stage_resumes_exactly(teacher, tmp_path):
    pairs = tmp_path / "pairs"
    straight = train(_config(teacher, "distill-ode", 2, pairs_dir=str(pairs)), tmp_path / "straight")
    files = sorted(pairs.glob("pair_*.safetensors"))
    assert len(files) == 3 and straight.end_step == 2
    first = files[1].read_bytes()
    snaps = load_file(str(files[1]))["snapshots"]
    assert snaps.shape == (5, C, 3, H, W)  # 4 student levels + the clean result
    assert all(torch.equal(snaps[k, :, 0], snaps[-1, :, 0]) for k in range(5))  # frame 0 clean throughout
    files[1].unlink()  # an interrupted generation: the next run makes the missing pair again
    train(_config(teacher, "distill-ode", 1, pairs_dir=str(pairs)), tmp_path / "pieces")
    assert files[1].read_bytes() == first
    train(_config(teacher, "distill-ode", 2, pairs_dir=str(pairs)), tmp_path / "pieces", resume="latest")
    _same_checkpoints(tmp_path / "straight", tmp_path / "pieces", 2)
    with pytest.raises(UserInputError, match="other settings"):
        train(_config(teacher, "distill-ode", 1, pairs_dir=str(pairs), teacher_steps=4), tmp_path / "other")


def test_dmd_resumes_exactly_and_exports_a_few_step_student(teacher, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    summary = train(_config(teacher, "distill-dmd", 3, generator_every=2), straight)
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert ["generator_loss" in r for r in records] == [True, False, True]
    pieces = tmp_path / "pieces"
    train(_config(teacher, "distill-dmd", 1, generator_every=2), pieces)
    train(_config(teacher, "distill-dmd", 3, generator_every=2), pieces, resume="latest")
    _same_checkpoints(straight, pieces, 3)

    # The critic and the generator both moved; the EMA followed the generator only.
    final = load_file(str(straight / "checkpoints" / "step_0000003" / "model.safetensors"))
    ema = load_file(str(straight / "checkpoints" / "step_0000003" / "ema.safetensors"))
    from sanawm.modeldir import load_transformer, read_model_dir

    start = load_transformer(read_model_dir(teacher).components["transformer"]).state_dict()
    key = "final_layer.linear.weight"
    assert not torch.equal(final[f"generator.{key}"], start[key])
    assert not torch.equal(final[f"critic.{key}"], start[key])
    assert set(ema) == {k[len("generator.") :] for k in final if k.startswith("generator.")} & set(ema)
    assert all(k.startswith("generator.") or k.startswith("critic.") for k in final)

    # The student folder: 4 steps at its timesteps, no guidance passes, streams.
    from sanawm.pipeline import WorldModel

    wm = WorldModel.load(summary.result["model_dir"], device="cpu")
    s = wm.settings
    assert (s.steps, s.timesteps, s.cfg, s.camera_cfg) == (4, (1000.0, 967.0, 908.0, 764.0), 1.0, 1.0)
    batches = []
    forward = wm.transformer.forward

    def watch(latents, timestep, *args, **kwargs):
        batches.append((latents.shape[0], sorted(set(timestep.flatten().tolist()))))
        return forward(latents, timestep, *args, **kwargs)

    monkeypatch.setattr(wm.transformer, "forward", watch)
    result = wm.generate(action="w-8", frames=9, mode="streaming")
    assert result.frames.shape == (9, 16, 16, 3)
    # 2 chunks (chunk_size 1 over 3 latent frames): 4 steps each, batch 1, one commit between.
    assert [b for b, _ in batches] == [1] * 9
    assert batches[0][1] == [0.0, 1000.0] and batches[3][1] == [0.0, 764.0] and batches[4][1] == [0.0]
    assert (tmp_path / "straight" / "critic" / "model.safetensors").is_file()


def test_cli_runs_the_distill_stages_and_checks_flags(teacher, tmp_path, capsys):
    path = tmp_path / "ode.json"
    path.write_text(json.dumps({"data": {"num_frames": 9, "height": 16, "width": 16},
                                "run": {"batch_size": 1}, "distill": {"pairs": 1, "teacher_steps": 2}}))  # fmt: skip
    out = tmp_path / "ode"
    args = ["train", "--stage", "distill-ode", "--teacher", str(teacher), "--config", str(path), "--out", str(out)]
    assert main([*args, "--steps", "1", "--no-progress"]) == 0
    assert "distill-ode" in capsys.readouterr().out
    assert (out / "model" / "model.json").is_file()
    assert main(["train", "--stage", "dit", "--teacher", str(teacher), "--out", str(tmp_path / "x")]) == 2
    assert "--teacher only applies" in capsys.readouterr().err
    assert main(["train", "--stage", "distill-dmd", "--out", str(tmp_path / "y")]) == 2
    assert "distill.teacher" in capsys.readouterr().err


def test_ode_trajectories_are_the_teachers_guided_streaming_samples(student):
    from sanawm.train.distill_ode import teacher_trajectories
    from sanawm.train.teacher import GuidedScore

    T, chunk = 6, 2
    cond = _condition(student, 1, T, seed=5)
    settings = SamplerSettings(steps=4, flow_shift=3.0, camera_cfg=2.0, seed=3)
    levels = settings.sigmas()
    student_levels = FlowMatchingSchedule.sigmas_from_timesteps([1000 * float(levels[0]), 1000 * float(levels[2])])
    grid, keep = teacher_grid(levels, student_levels)
    assert len(grid) == len(levels) and len(keep) == 3
    g = torch.Generator().manual_seed(3)  # the sampler's draws: one per chunk, in order
    spans = chunk_spans(chunk_starts_for(T, chunk), T)
    noise = torch.cat([torch.randn(1, C, b - a, H, W, generator=g) for a, b in spans], dim=2)
    guided = GuidedScore(student, cond, cfg=1.0, camera_cfg=2.0, streaming=True)
    snaps = teacher_trajectories(guided, cond, noise, grid, keep, chunk)
    text = student.null_text()
    sampled = torch.cat(list(sample_streaming(
        student, Conditioning(cond.first, text, cond.raymap, cond.plucker), settings, chunk_size=chunk,
    )), dim=2)  # fmt: skip
    assert snaps.shape == (1, 3, C, T, H, W)
    torch.testing.assert_close(snaps[:, -1], sampled, rtol=1e-5, atol=1e-5)
    assert torch.equal(snaps[:, 0, :, 1:], noise[:, :, 1:]) and torch.equal(snaps[:, 0, :, :1], cond.first)


def test_guided_score_combines_text_and_camera_branches(student):
    from sanawm.sampling import combine_guidance
    from sanawm.train.teacher import GuidedScore

    cond = _condition(student, 2, 3, seed=6)
    g = torch.Generator().manual_seed(7)
    cond.text = torch.randn(2, 4, 16, generator=g)
    cond.text_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    cond.has_text = True
    x = torch.randn(2, C, 3, H, W, generator=g)
    t = torch.tensor([[0.0, 600.0, 600.0], [0.0, 300.0, 300.0]])
    with torch.no_grad():
        out = GuidedScore(student, cond, cfg=3.0, camera_cfg=2.0).velocity(x, t, 0, 3)
        full = student(x, t, cond.text, cond.text_mask, cond.raymap, cond.plucker)
        no_text = student(x, t, cond.null_text, cond.null_mask, cond.raymap, cond.plucker)
        no_camera = student(x, t, cond.text, cond.text_mask)
    torch.testing.assert_close(out, combine_guidance(full, no_text, no_camera, 3.0, 2.0), rtol=1e-5, atol=1e-5)
    expected = no_text + 3.0 * (full - no_text) + (full - no_camera)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_the_dmd_config_example_in_the_training_docs_is_valid(teacher):
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    block = text.split("## Distillation", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    values = json.loads(block)
    values["distill"]["teacher"] = str(teacher)
    cfg = from_dict(values).validate()
    assert cfg.stage == "distill-dmd" and cfg.optim.betas == (0.0, 0.999) and cfg.distill.generator_every == 5


def test_the_embedded_distillation_script_runs_in_smoke_mode(teacher, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "distill_embedded.py"
    spec = importlib.util.spec_from_file_location("distill_embedded", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    # A tiny teacher keeps the test fast (the script's default teacher is the embedded model).
    args = ["--smoke", "--teacher", str(teacher), "--run-dir", str(tmp_path / "run"), "--out", str(out)]
    assert module.main([*args, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert text.count("distill-dmd") == 2 and "distill-ode" in text and "the dmd stage's model folder" in text
    from sanawm.pipeline import WorldModel

    settings = WorldModel.load(out / "model", device="cpu").settings
    assert settings.steps == 4 and settings.cfg == settings.camera_cfg == 1.0


def test_a_teacher_with_text_encoder_and_ltx2_vae_gives_a_student_that_references_them(tmp_path):
    from _tiny_models import make_official_layout_dir

    from sanawm.modeldir import read_model_dir
    from sanawm.pipeline import WorldModel

    teacher = make_official_layout_dir(tmp_path / "teacher")
    cfg = from_dict({
        "stage": "distill-ode",
        "data": {"num_frames": 17, "height": 64, "width": 64},
        "run": {"batch_size": 1, "progress": False, "steps": 1},
        "distill": {"teacher": str(teacher), "pairs": 1, "teacher_steps": 2},
    })  # fmt: skip
    summary = train(cfg, tmp_path / "ode")
    spec = read_model_dir(summary.result["model_dir"])
    for name in ("vae", "text_encoder", "tokenizer"):
        assert spec.components[name] == (teacher / name).resolve()
    assert spec.text == read_model_dir(teacher).text
    wm = WorldModel.load(spec.root, device="cpu")
    result = wm.generate(action="w-16", frames=17, mode="streaming", prompt="a red car")
    assert result.frames.shape == (17, 64, 64, 3) and wm.settings.flow_shift == 8.0


def test_rollout_takes_its_cache_window_from_the_models_api(student, monkeypatch):
    cond = _condition(student, 1, 5)
    sigmas = FlowMatchingSchedule.sigmas_from_timesteps([1000, 500])
    seen = []
    original = student.new_stream_cache

    def with_window(window=None, sink=0):
        seen.append((window, sink))
        return original(window=window, sink=sink)

    monkeypatch.setattr(student, "new_stream_cache", with_window)
    rollout(student, cond, sigmas, 0, 2, torch.Generator().manual_seed(0), grad=False, window=2, sink=3)
    rollout(student, cond, sigmas, 0, 2, torch.Generator().manual_seed(0), grad=False)
    assert seen == [(2, 3), (None, 0)]


def test_the_dmd_benchmark_script_runs_on_the_tiny_preset(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_dmd.py"
    spec = importlib.util.spec_from_file_location("bench_dmd", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--tiny", "--json", str(tmp_path / "dmd.json")]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split()[:2] == ["preset", "latent"] and table[-1].split()[:3] == ["tiny", "7x2x3", "2"]
    result = json.loads((tmp_path / "dmd.json").read_text())
    assert result["iteration_s"] == pytest.approx(result["generator_update_s"] + result["critic_update_s"])


def test_the_distill_stages_default_to_the_published_optimizer_settings(teacher, tmp_path):
    from sanawm.cli import build_parser
    from sanawm.cli.train import build_config

    def config(*extra):
        return build_config(build_parser().parse_args(["train", "--out", str(tmp_path), *extra]))

    dmd = config("--stage", "distill-dmd", "--teacher", str(teacher))
    assert (dmd.optim.lr, dmd.optim.betas, dmd.optim.warmup_steps) == (1e-5, (0.0, 0.999), 0)
    assert config("--stage", "distill-ode", "--teacher", str(teacher)).optim.lr == 2e-5
    path = tmp_path / "dmd.json"
    path.write_text(json.dumps({"stage": "distill-dmd", "distill": {"teacher": str(teacher)}, "optim": {"lr": 3e-6}}))
    from_file = config("--config", str(path))
    assert (from_file.optim.lr, from_file.optim.betas) == (3e-6, (0.0, 0.999))
    assert config("--stage", "dit", "--vae", str(teacher / "vae")).optim.lr == 3e-4  # other stages unchanged
