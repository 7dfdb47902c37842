"""Training end to end on the CPU: the loss goes down, resuming is exact, the export loads,
the VAE stage measures its latent statistics, gradient checkpointing, the CLI."""

import copy
import json

import pytest
import torch
from _train_fixtures import TINY_DIT, TINY_VAE, dit_config, save_tiny_vae, write_clip_folder
from safetensors.torch import load_file

from sanawm.cli import main
from sanawm.model import build_preset
from sanawm.train import from_dict, train
from sanawm.train.data import make_source
from sanawm.train.loop import StandardSteps, enable_gradient_checkpointing
from sanawm.train.vae import AutoencoderPass
from sanawm.vae import CompactVAE, CompactVAEConfig, load_vae


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "vae")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clip_folder(tmp_path_factory.mktemp("clips"))


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_dit_learns_on_procedural_clips(vae_dir, tmp_path):
    # A fixed pool of 4 rendered clips (fresh_per_step 0): the model must fit them.
    cfg = dit_config(
        vae_dir,
        data={"pool_size": 4, "fresh_per_step": 0, "procedural": {"kinds": ["room", "corridor"]}},
        optim={"lr": 2e-3, "warmup_steps": 5},
        run={"steps": 20, "batch_size": 2, "log_every": 1, "progress": False, "seed": 1},
    )
    summary = train(cfg, tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert summary.end_step == 20 and len(losses) == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, losses


def test_resume_reproduces_the_uninterrupted_run_and_exports_the_ema(vae_dir, clips, tmp_path):
    sections = dict(
        data={"source": "folder", "folder": {"root": str(clips), "frame_strides": [1], "max_zoom": 1.3},
              "pool_size": 3, "fresh_per_step": 1},
        objective={"causal_prob": 0.5, "camera_dropout": 0.5, "text_dropout": 0.5},
        optim={"warmup_steps": 2},
    )  # fmt: skip
    straight = tmp_path / "straight"
    train(dit_config(vae_dir, run={"steps": 4, "log_every": 1, "progress": False}, **sections), straight)
    pieces = tmp_path / "pieces"
    first = train(dit_config(vae_dir, run={"steps": 2, "log_every": 1, "progress": False}, **sections), pieces)
    assert first.end_step == 2
    second = train(dit_config(vae_dir, run={"steps": 4, "log_every": 1, "progress": False}, **sections), pieces, resume="latest")
    assert (second.start_step, second.end_step) == (2, 4)
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step_0000004" / name))
        b = load_file(str(pieces / "checkpoints" / "step_0000004" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert _losses(straight) == _losses(pieces)

    # The exported model folder holds the EMA weights (float16) and loads for generation.
    from sanawm.pipeline import WorldModel

    wm = WorldModel.load(straight / "model", device="cpu")
    ema = load_file(str(straight / "checkpoints" / "step_0000004" / "ema.safetensors"))
    params = dict(wm.transformer.named_parameters())
    assert all(torch.equal(params[k], v.half().float()) for k, v in ema.items())
    assert wm.settings.height == 16 and wm.settings.flow_shift == 3.0 and wm.settings.chunk_size == 2
    source_vae = load_vae(vae_dir)
    assert torch.equal(wm.vae.latents_std, source_vae.latents_std)


def test_vae_stage_measures_latent_stats_and_psnr(clips, tmp_path):
    cfg = from_dict({
        "stage": "vae",
        "data": {"source": "folder", "folder": {"root": str(clips)}, "num_frames": 5, "height": 16, "width": 16},
        "vae": TINY_VAE,
        "vae_loss": {"stats_clips": 4, "eval_clips": 2},
        "run": {"steps": 3, "batch_size": 2, "progress": False},
    })  # fmt: skip
    summary = train(cfg, tmp_path / "run")
    vae = load_vae(tmp_path / "run" / "vae")
    # Re-encode the clips the statistics were measured on: normalised latents are standard.
    source = make_source(cfg.data, cfg.run.seed + 1)
    with torch.no_grad():
        z = vae.encode(source.finish([source.prepare(d) for d in range(4)], torch.device("cpu")).pixels())
    flat = z.transpose(0, 1).reshape(4, -1).double()
    torch.testing.assert_close(flat.mean(1), torch.zeros(4, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(1, correction=0), torch.ones(4, dtype=torch.float64), atol=1e-4, rtol=0)
    report = json.loads((tmp_path / "run" / "vae_eval.json").read_text())
    assert report["clips"] == 2 and 0 < report["psnr_db"] < 100
    assert summary.result["psnr_db"] == pytest.approx(report["psnr_db"])


def test_decoder_only_stage_keeps_the_encoder_and_latent_stats(clips, tmp_path):
    base = save_tiny_vae(tmp_path / "base")
    cfg = from_dict({
        "stage": "vae",
        "data": {"source": "folder", "folder": {"root": str(clips)}, "num_frames": 5, "height": 16, "width": 16},
        "vae_loss": {"decoder_of": str(base), "latent_noise": 0.5, "stats_clips": 2, "eval_clips": 1},
        "optim": {"warmup_steps": 0, "lr": 1e-2},
        "run": {"steps": 3, "batch_size": 2, "progress": False},
    })  # fmt: skip
    train(cfg, tmp_path / "run")
    before, after = CompactVAE.load(base).state_dict(), CompactVAE.load(tmp_path / "run" / "vae").state_dict()
    assert before.keys() == after.keys()
    for name in before:
        if name.startswith("decoder."):
            continue
        assert torch.equal(before[name], after[name]), name  # encoder weights, latents_mean / latents_std
    changed = [n for n in before if n.startswith("decoder.") and not torch.equal(before[n], after[n])]
    assert len(changed) > 4


def test_latent_noise_is_scaled_by_the_latent_std_and_drawn_per_clip():
    vae = CompactVAE(CompactVAEConfig(latent_channels=4, channels=(8, 8, 8)))
    vae.set_latent_stats(torch.zeros(4), torch.tensor([0.5, 2.0, 1.0, 4.0]))
    video = torch.rand(2, 3, 5, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    out, mean, logvar = AutoencoderPass(vae, train_encoder=False, latent_noise=0.7)(
        video, [torch.Generator().manual_seed(s) for s in (11, 12)])
    # The same draws by hand, in float64: posterior sample, then per clip a level u ~ U(0, 1) and more noise.
    zs = []
    for i, seed in enumerate((11, 12)):
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn((1, *mean.shape[1:]), generator=g)
        u = torch.rand(1, generator=g)
        extra = torch.randn((1, *mean.shape[1:]), generator=g)
        std = torch.tensor([0.5, 2.0, 1.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1, 1)
        zs.append(mean[i : i + 1].double() + (0.5 * logvar[i : i + 1].double()).exp() * eps.double()
                  + 0.7 * u.double() * std * extra.double())  # fmt: skip
    torch.testing.assert_close(out, vae.decode_raw(torch.cat(zs).float()), rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in vae.encoder.parameters())
    assert all(p.requires_grad for p in vae.decoder.parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_preset("tiny", **{**TINY_DIT, "in_channels": 4, "plucker_channels": 24, "softmax_attn_dtype": None})
    model.init_weights()
    ckpt = copy.deepcopy(model)
    enable_gradient_checkpointing(ckpt.blocks)
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(2, 4, 3, 2, 2, generator=g), torch.tensor([[0.0, 500, 700], [0, 10, 999]]),
            torch.randn(2, 3, 8, generator=g), None, None, None)  # fmt: skip
    for m in (model, ckpt):
        m(*args).square().mean().backward()
    for (name, a), b in zip(model.named_parameters(), ckpt.parameters()):
        if a.grad is None:
            assert b.grad is None, name
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert ckpt.state_dict().keys() == model.state_dict().keys()


def test_cli_trains_resumes_and_reports_bad_input(clips, tmp_path, capsys):
    cfg = {
        "stage": "vae",
        "data": {"source": "folder", "folder": {"root": str(clips)}, "num_frames": 5, "height": 16, "width": 16},
        "vae": TINY_VAE, "vae_loss": {"stats_clips": 2, "eval_clips": 1},
        "run": {"batch_size": 1},
    }  # fmt: skip
    path = tmp_path / "vae.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--steps", "1", "--no-progress"]) == 0
    assert main(["train", "--config", str(path), "--out", str(out), "--steps", "2", "--no-progress", "--resume"]) == 0
    table = capsys.readouterr().out
    assert "vae" in table and "1->2" in table
    assert (out / "checkpoints" / "step_0000002").is_dir()

    assert main(["train", "--stage", "dit", "--out", str(tmp_path / "dit"), "--no-progress"]) == 2
    assert "needs a trained VAE" in capsys.readouterr().err
    path.write_text(json.dumps({"run": {"stepz": 3}}))
    assert main(["train", "--config", str(path), "--out", str(out)]) == 2
    assert "stepz" in capsys.readouterr().err
    path.write_text(json.dumps({"data": {"pool_size": 1}, "run": {"batch_size": 4}}))
    assert main(["train", "--config", str(path), "--out", str(out)]) == 2
    assert "pool_size" in capsys.readouterr().err


def test_time_budget_stops_with_a_checkpoint_and_init_from_copies_weights(vae_dir, clips, tmp_path):
    data = {"source": "folder", "folder": {"root": str(clips)}, "pool_size": 2}
    cfg = dit_config(vae_dir, data=data, run={"steps": 10_000, "time_budget_s": 1.0, "budget_reserve_s": 0.0,
                                              "progress": False})  # fmt: skip
    summary = train(cfg, tmp_path / "run")
    assert summary.stopped_by_budget and 1 <= summary.end_step < 10_000
    assert (tmp_path / "run" / "checkpoints" / f"step_{summary.end_step:07d}" / "trainer.pt").is_file()

    from sanawm.train.dit import DiTTask
    from sanawm.train.distributed import setup

    started = DiTTask(dit_config(vae_dir, data=data, dit={"init_from": str(tmp_path / "run" / "model")}), setup("cpu"))
    exported = load_file(str(tmp_path / "run" / "model" / "transformer" / "model.safetensors"))
    state = started.module.state_dict()
    assert all(torch.equal(state[k], v.float()) for k, v in exported.items())
    assert "raymap_embedder.proj.weight" in started.frozen  # never read by the forward


def test_embedded_training_script_runs_end_to_end_in_smoke_mode(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "train_embedded.py"
    spec = importlib.util.spec_from_file_location("train_embedded", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    run = ["--smoke", "--run-dir", str(tmp_path / "run"), "--out", str(out), "--no-progress"]
    assert module.main(run + ["--causal-prob", "0.75"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and "model/transformer/model.safetensors" in files and "summary.txt" in files
    text = capsys.readouterr().out
    assert "vae" in text and "dit" in text and "PSNR" in text
    stage = json.loads((tmp_path / "run" / "dit_stage" / "config.json").read_text())
    assert stage["objective"]["causal_prob"] == 0.75  # the recipe's is 0.25
    from sanawm.pipeline import WorldModel

    assert WorldModel.load(out / "model", device="cpu").settings.height == 16
    with pytest.raises(SystemExit) as refused:
        module.main(run + ["--causal-prob", "1.5"])
    assert refused.value.code == 2 and "--causal-prob must lie in [0, 1]" in capsys.readouterr().err


def test_embedded_training_script_trains_only_a_vae_with_vae_only(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "train_embedded.py"
    spec = importlib.util.spec_from_file_location("train_embedded", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    args = ["--smoke", "--vae-only", "--linear-shortcut", "--run-dir", str(tmp_path / "run"), "--out", str(out)]
    assert module.main(args + ["--no-progress"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["train_log.jsonl", "vae/config.json", "vae/model.safetensors", "vae_report.json"]
    weights = load_file(str(out / "vae" / "model.safetensors"))
    assert weights["decoder.linear.rest.weight"].dtype == torch.bfloat16
    assert weights["latents_std"].dtype == torch.float32
    report = json.loads((out / "vae_report.json").read_text())
    assert report["steps"] == 4 and report["config"]["vae"]["linear_shortcut"] is True
    vae = load_vae(out / "vae")
    assert vae.config.linear_shortcut and "dit" not in capsys.readouterr().out


def test_a_finished_run_is_not_overwritten_without_resume(clips, tmp_path, capsys):
    args = ["train", "--stage", "vae", "--data", str(clips), "--frames", "5", "--size", "16x16", "--steps", "1",
            "--batch-size", "1", "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps({"vae": TINY_VAE, "vae_loss": {"stats_clips": 1, "eval_clips": 1}}))
    assert main(args + ["--config", str(cfg)]) == 0
    assert main(args + ["--config", str(cfg)]) == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_the_config_example_in_the_training_docs_is_valid():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    cfg = from_dict(json.loads(block)).validate()
    assert cfg.stage == "dit" and cfg.dit.overrides["depth"] == 8 and cfg.run.time_budget_s == 3600


class _ScalarFeed:
    clips_loaded = 0

    def batch(self, step, generator):
        return {"x": torch.tensor([1.0, 2.0]), "step": step}

    def close(self):
        pass


class _NaNOnSecondStep(StandardSteps):
    """A minimal Task: a linear layer whose second step has a NaN loss."""

    name = "toy"
    find_unused_parameters = False

    def __init__(self):
        torch.manual_seed(0)
        self.module = torch.nn.Linear(2, 1)
        self.feed = _ScalarFeed()

    def shard_units(self):
        return []

    def loss(self, model, batch, shared, local):
        out = model(batch["x"]).sum()
        return (out * float("nan") if batch["step"] == 1 else out), {}

    def finish(self, run_dir, model_state, ema_state):
        return {"weight": float(model_state["weight"].sum())}


def test_steps_with_non_finite_gradients_are_skipped(tmp_path):
    from sanawm.train.distributed import setup
    from sanawm.train.loop import run_task

    results = []
    for steps in (1, 2):
        cfg = from_dict({"run": {"steps": steps, "progress": False, "log_every": 1}})
        results.append(run_task(_NaNOnSecondStep(), cfg, tmp_path / str(steps), setup("cpu"), None))
    assert results[0].result == results[1].result  # the NaN step changed nothing
    log = [json.loads(x) for x in (tmp_path / "2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_fraction"] for r in log] == [0.0, 1.0]


def test_dit_stage_on_an_ltx2_vae_references_it_in_the_export(clips, tmp_path):
    from _tiny_models import save_tiny_ltx2

    from sanawm.modeldir import read_model_dir

    save_tiny_ltx2(tmp_path / "ltx2")
    cfg = dit_config(
        tmp_path / "ltx2",
        data={"source": "folder", "folder": {"root": str(clips)}, "num_frames": 9, "height": 32, "width": 32},
        run={"steps": 1, "batch_size": 1, "progress": False},
    )
    summary = train(cfg, tmp_path / "run")
    spec = read_model_dir(tmp_path / "run" / "model")
    assert spec.components["vae"] == (tmp_path / "ltx2").resolve()  # referenced, not copied
    assert summary.end_step == 1
    from sanawm.pipeline import WorldModel

    wm = WorldModel.load(tmp_path / "run" / "model", device="cpu")
    assert wm.transformer.config.in_channels == 8 and wm.transformer.config.plucker_channels == 48


def test_channel_weight_power_weighs_the_dit_loss_by_the_vae_latent_std(vae_dir, tmp_path):
    """The DiT stage takes its channel weights from its VAE: a VAE whose channels share one std
    gives weights 1 (the same losses as power 0, bit for bit), the tiny VAE's unequal stds
    change the loss; an LTX-2 VAE (other latent statistics) is refused."""
    from _tiny_models import save_tiny_ltx2

    from sanawm.errors import UserInputError

    equal = load_vae(vae_dir)
    equal.set_latent_stats(equal.latents_mean, torch.full((4,), 0.5))
    equal.save(tmp_path / "equal_vae")
    run = {"steps": 1, "log_every": 1, "progress": False}
    losses = {}
    for name, vae, power in (("plain", tmp_path / "equal_vae", 0.0), ("equal", tmp_path / "equal_vae", 1.0),
                             ("tiny0", vae_dir, 0.0), ("tiny1", vae_dir, 1.0)):  # fmt: skip
        train(dit_config(vae, run=run, objective={"channel_weight_power": power}), tmp_path / name)
        losses[name] = _losses(tmp_path / name)
    assert losses["equal"] == losses["plain"]
    assert all(abs(a - b) > 1e-4 * a for a, b in zip(losses["tiny0"], losses["tiny1"])), losses
    save_tiny_ltx2(tmp_path / "ltx2")
    with pytest.raises(UserInputError, match="compact VAE"):
        train(dit_config(tmp_path / "ltx2", data={"num_frames": 9, "height": 32, "width": 32},
                         run=run, objective={"channel_weight_power": 1.0}), tmp_path / "ltx")  # fmt: skip
    with pytest.raises(UserInputError, match="channel_weight_power must lie in"):
        dit_config(vae_dir, objective={"channel_weight_power": 2.5}).validate()
