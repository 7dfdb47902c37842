"""`sanawm bench` / `sanawm.benchmark` on the tiny preset (CPU): table, JSON, CSV, streaming
chunks and cache sizes, and every bad input -> exit 2 with one line."""

import csv
import json

import pytest
import torch

from sanawm.benchmark import (
    BenchConfig,
    format_kernel_rows,
    latents_for_frames,
    make_inputs,
    open_every_branch,
    parse_latent_size,
    random_model,
    rel_l2_column,
    time_kernel_rows,
)
from sanawm.cli import main
from sanawm.errors import UserInputError
from sanawm.model import preset_config

FAST = ["--preset", "tiny", "--device", "cpu", "--warmup", "0", "--iters", "1"]
EXPECTED_COLUMNS = [
    "preset", "mode", "dtype", "device", "latents", "latent_frames", "latent_height", "latent_width",
    "video_frames", "tokens", "seconds", "tokens_per_s", "peak_memory_gb", "num_chunks",
    "first_chunk_seconds", "chunk_seconds_median", "gdn_cache_bytes", "kv_cache_bytes",
]  # fmt: skip


def test_frames_map_to_latents_with_the_release_vae_strides():
    # 8 video frames per latent frame after the first, 32 pixels per latent pixel.
    assert latents_for_frames(961, 704, 1280) == (121, 22, 40)
    assert latents_for_frames(321, 704, 1280) == (41, 22, 40)
    assert latents_for_frames(81, 704, 1280) == (11, 22, 40)
    assert latents_for_frames(1, 64, 96) == (1, 2, 3)
    assert parse_latent_size("11x22x40") == (11, 22, 40)
    for bad in [(80, 704, 1280), (0, 704, 1280), (81, 700, 1280), (81, 704, 0)]:
        with pytest.raises(UserInputError):
            latents_for_frames(*bad)
    with pytest.raises(UserInputError, match="mode"):
        BenchConfig(preset="tiny", mode="backward")
    with pytest.raises(UserInputError, match="iters"):
        BenchConfig(preset="tiny", iters=0)


def test_forward_mode_prints_the_table_and_writes_json_and_csv(tmp_path, capsys):
    out_json, out_csv = tmp_path / "b.json", tmp_path / "b.csv"
    code = main(["bench", *FAST, "--latents", "2x2x3", "3x1x2", "--json", str(out_json), "--csv", str(out_csv)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "s/forward" in printed and "tokens/s" in printed
    lines = [line.split() for line in printed.splitlines()]
    table = {line[0]: line for line in lines if line and line[0] in ("2x2x3", "3x1x2")}
    assert set(table) == {"2x2x3", "3x1x2"}
    assert table["2x2x3"][1:3] == ["9", "12"] and table["3x1x2"][1:3] == ["17", "6"]  # frames, tokens
    assert table["2x2x3"][5] == "n/a"  # no peak-memory counter on the CPU

    rows = json.loads(out_json.read_text())["rows"]
    assert [r["latents"] for r in rows] == ["2x2x3", "3x1x2"]
    assert [r["tokens"] for r in rows] == [2 * 2 * 3, 3 * 1 * 2]
    assert [r["video_frames"] for r in rows] == [9, 17]
    for r in rows:
        assert r["mode"] == "forward" and r["peak_memory_gb"] is None and r["chunks"] == []
        assert r["seconds"] > 0 and r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"])

    with open(out_csv, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == EXPECTED_COLUMNS
        csv_rows = list(reader)
    assert [(r["latents"], int(r["tokens"])) for r in csv_rows] == [("2x2x3", 12), ("3x1x2", 6)]
    assert all(r["peak_memory_gb"] == "" for r in csv_rows)


def test_streaming_mode_reports_every_chunk_and_a_constant_gdn_cache(tmp_path, capsys):
    out_json = tmp_path / "s.json"
    # 73 frames at 64x64 -> 10x2x2 latents; chunks of 3: [0, 4) (frame 0 + 3), [4, 7), [7, 10).
    code = main(["bench", *FAST, "--mode", "streaming", "--chunk-size", "3", "--frames", "73",
                 "--size", "64x64", "--json", str(out_json)])  # fmt: skip
    assert code == 0
    assert "GDN MB" in capsys.readouterr().out
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["latents"] for r in rows] == ["10x2x2"]
    long = rows[0]
    assert [(c["start"], c["stop"]) for c in long["chunks"]] == [(0, 4), (4, 7), (7, 10)]
    assert [c["tokens"] for c in long["chunks"]] == [16, 12, 12]
    assert long["num_chunks"] == 3 and long["tokens"] == 40 and long["peak_memory_gb"] is None
    assert long["seconds"] == pytest.approx(sum(c["seconds"] for c in long["chunks"]))
    assert long["first_chunk_seconds"] == long["chunks"][0]["seconds"]
    later = sorted(c["seconds"] for c in long["chunks"][1:])
    assert long["chunk_seconds_median"] == pytest.approx((later[0] + later[1]) / 2)

    # GDN state: constant once 3 (= key conv kernel - 1) frames are committed.
    gdn = {c["gdn_cache_bytes"] for c in long["chunks"]}
    assert len(gdn) == 1 and gdn.pop() > 0
    # Softmax keys + values grow with the committed tokens: k and v of hidden_size floats
    # per token per softmax block (twice that if a camera branch keeps its own).
    cfg = preset_config("tiny")
    per_token = 2 * cfg.hidden_size * 4 * len(cfg.softmax_blocks)
    committed = [c["stop"] * 4 for c in long["chunks"]]
    ratios = {c["kv_cache_bytes"] / n for c, n in zip(long["chunks"], committed)}
    assert len(ratios) == 1 and ratios.pop() in (per_token, 2 * per_token)
    assert long["kv_cache_bytes"] == long["chunks"][-1]["kv_cache_bytes"]


# --cuda-graphs on the CPU streams eagerly; --warmup 1 also runs the streaming warm-up pass.
@pytest.mark.parametrize("extra", [[], ["--cuda-graphs", "--warmup", "1"]])
def test_streaming_window_keeps_the_key_value_cache_constant(tmp_path, extra):
    out_json = tmp_path / "w.json"
    # 16x1x1 latents, chunks of 3: [0, 4), [4, 7), [7, 10), [10, 13), [13, 16); window 1 + sink 2.
    code = main(["bench", *FAST, "--mode", "streaming", "--latents", "16x1x1", "--window", "1", "--sink", "2",
                 "--json", str(out_json), *extra])  # fmt: skip
    assert code == 0
    kv = [c["kv_cache_bytes"] for c in json.loads(out_json.read_text())["rows"][0]["chunks"]]
    # Held frames after each commit: 0-3 (4), 0-1 + 4-6 (5), then 0-1 + the last chunk (5) for ever.
    per_frame = kv[0] // 4
    assert kv == [4 * per_frame] + [5 * per_frame] * 4


BAD = [
    (["--frames", "80"], "8k+1"),
    (["--frames", "81", "--size", "700x1280"], "multiples of 32"),
    (["--latents", "2x2x0"], "latent size"),
    (["--latents", "2x2"], "latent size"),
    (["--iters", "0", "--latents", "2x2x2"], "iters"),
    (["--chunk-size", "0", "--mode", "streaming", "--latents", "2x2x2"], "chunk_size"),
    (["--window", "-1", "--mode", "streaming", "--latents", "2x2x2"], "window"),
    (["--latents", "2x2x2", "--json", "/no/such/folder/b.json"], "cannot write"),
    (["--device", "nonsense", "--latents", "2x2x2"], "device"),
    (["--fp8", "--latents", "2x2x2"], "--fp8 needs a CUDA GPU"),
    (["--cuda-graphs", "--latents", "2x2x2"], "streaming mode only"),
    (["--attention", "flash4", "--latents", "2x2x2"], "--attention flash4: the flash4 attention kernel needs a CUDA GPU"),
    (["--attention", "fp8", "--latents", "2x2x2"], "--attention fp8: the fp8 attention kernel needs a CUDA GPU"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_inputs_exit_2_with_one_line(extra, message, capsys):
    args = ["bench", "--preset", "tiny", "--device", "cpu", *extra]
    if "--device" in extra:
        args = ["bench", "--preset", "tiny", *extra]
    try:
        code = main(args)
    except SystemExit as stop:  # argparse-level mistakes
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_the_large_preset_is_refused_on_the_cpu(capsys):
    assert main(["bench", "--device", "cpu", "--frames", "81"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--preset tiny" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main(["bench", "--preset", "tiny", "--device", "cuda", "--latents", "2x2x2"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_every_size_is_warmed_up_before_the_first_is_timed():
    from sanawm.benchmark import random_model, run_benchmark

    config = BenchConfig(preset="tiny", latents=((2, 2, 3), (3, 1, 2), (5, 1, 1)), device="cpu", dtype="float32",
                         warmup=1, iters=2)  # fmt: skip
    model = random_model("tiny", torch.device("cpu"), torch.float32)
    shapes = []
    forward = model.forward

    def recording_forward(latents, *args, **kwargs):
        shapes.append(tuple(latents.shape[2:]))
        return forward(latents, *args, **kwargs)

    model.forward = recording_forward
    rows = run_benchmark(config, model=model)
    sizes = [(2, 2, 3), (3, 1, 2), (5, 1, 1)]
    # One untimed pass over all sizes, then per size: its warm-up call and the timed calls.
    assert shapes == sizes + [s for s in sizes for _ in range(1 + 2)]
    assert [r.latents for r in rows] == ["2x2x3", "3x1x2", "5x1x1"]


def test_kernel_rows_keep_the_rows_that_run_and_report_the_one_that_fails(capsys):
    """The kernel micro-benchmarks' shared loop (scripts/bench_depthwise_glu.py, bench_ucpe.py):
    the error text comes from what each row returned, GB/s from the bytes moved per call, and a
    row that raises is printed as FAILED and left out of the table."""

    def broken():
        raise RuntimeError("no such tile")

    rows = [("ones", lambda: torch.ones(3)), ("broken", broken), ("twos", lambda: torch.full((3,), 2.0))]
    table = time_kernel_rows(rows, torch.device("cpu"), 1e6, lambda name, r: f"{r.sum().item():.1f}", 0, 1)
    assert [(name, err) for name, _, _, err in table] == [("ones", "3.0"), ("twos", "6.0")]
    for _, ms, gbs, _ in table:
        assert ms > 0 and gbs == pytest.approx(1e6 / ms / 1e6)
    assert "broken: FAILED RuntimeError: no such tile" in capsys.readouterr().out
    text = format_kernel_rows(table, 10).splitlines()
    assert len(text) == 3 and text[0].split() == ["ms", "GB/s", "rel", "L2"] and text[2].split()[-1] == "6.0"


def test_rel_l2_column_reads_the_result_or_the_output_buffer():
    reference, out = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.5])
    error = rel_l2_column(reference, out, skip=("other op",))
    assert error("returns", torch.tensor([3.0, 4.0])) == "0.00e+00"
    assert error("writes into out", None) == "1.00e-01"  # |(0, 0.5)| / |(3, 4)|
    assert error("other op", torch.zeros(2)) == "-"


def test_open_every_branch_opens_the_paths_the_init_shuts():
    """The from-scratch init zeroes the temporal convs, the camera output projections and the
    gate weights; opened, each holds values of std 0.5 / sqrt(fan-in), the same for a seed, and
    the velocity depends on the temporal conv and the camera branch (it did not before)."""
    torch.manual_seed(0)
    model = random_model("tiny", torch.device("cpu"), torch.float32)

    def weights(m):
        return [w for b in m.blocks for w in (b.mlp.t_conv.weight, b.attn.out_proj_cam.weight,
                                              b.attn.output_gate.weight, b.attn.beta_proj.weight,
                                              b.attn.gate_proj.weight)]  # fmt: skip

    assert all(not w.any() for w in weights(model))
    inputs = make_inputs(model, (3, 4, 6), torch.device("cpu"), torch.float32, 8, torch.Generator().manual_seed(0))

    def velocity_change(m, names):  # relative change of the velocity when the named weights are zeroed again
        with torch.no_grad():
            before = m(**inputs)
            saved = {n: p.clone() for n, p in m.named_parameters() if n.endswith(names)}
            for n, p in m.named_parameters():
                if n in saved:
                    p.zero_()
            after = m(**inputs)
            for n, p in m.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
        return ((before - after).norm() / before.norm()).item()

    closed = velocity_change(model, ("t_conv.weight", "out_proj_cam.weight"))
    assert open_every_branch(model) is model
    for w in weights(model):
        assert abs(w.std().item() / (0.5 / w[0].numel() ** 0.5) - 1) < 0.35
    torch.manual_seed(0)
    again = open_every_branch(random_model("tiny", torch.device("cpu"), torch.float32))
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(again)))
    assert closed == 0.0
    assert velocity_change(model, ("t_conv.weight",)) > 4e-4  # measured 2.0e-3
    assert velocity_change(model, ("out_proj_cam.weight",)) > 0.1  # measured 0.81
