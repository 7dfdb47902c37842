"""Speed and memory of the stage-1 DiT: one forward, or one chunk-by-chunk streaming pass.

    config = BenchConfig(preset="tiny", latents=((5, 4, 6),), device="cpu", dtype="float32")
    rows = run_benchmark(config)
    print(format_table(rows)); write_json(rows, "bench.json"); write_csv(rows, "bench.csv")

The model has random weights (the from-scratch init) and the inputs are random latents and
text with a real, smoothly moving camera: speed and memory do not depend on the values.

Modes:
- "forward": one bidirectional forward of the whole clip (no CFG), the cost of one sampling
  step of `sample_bidirectional`.
- "streaming": the clip is cut into chunks as `sample_streaming` cuts it; each chunk is timed
  as one forward that reads the stream cache (one sampling step of that chunk), then committed
  to the cache. A row's `seconds` is the sum of the per-chunk medians, i.e. one denoising step
  of the whole clip; commits are timed apart (`ChunkTiming.commit_seconds`). The cache keeps
  every chunk unless `window` bounds it (see `sanawm.model.StreamCache`); a chunk's inputs are
  made when it is reached, so nothing but the model and the cache grows with the clip.

Times are medians of `iters` calls after `warmup` calls, measured with CUDA events on CUDA and
`time.perf_counter` on the CPU. Before the first row is timed every clip size is run `warmup`
times, so one-time costs (thread pools, allocator growth, kernels built per shape) land in no
row; and each size is warmed again just before it is timed. Peak memory is `torch.cuda.max_memory_allocated` (weights
included); on the CPU there is no such counter, so it is None (never an estimate).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from sanawm.chunks import chunk_spans, chunk_starts_for
from sanawm.device import choose_device
from sanawm.errors import UserInputError
from sanawm.model import SanaWMTransformer, StreamCache, build_preset, preset_config
from sanawm.model.attention import GDNPast, SoftmaxPast
from sanawm.model.compile import apply_fast_paths

#: The video VAE of the public release: 8 video frames per latent frame after the first,
#: 32 pixels per latent pixel.
TEMPORAL_STRIDE = 8
SPATIAL_STRIDE = 32
DTYPES = ("bfloat16", "float16", "float32")
MODES = ("forward", "streaming")
#: Presets too large to run on the CPU in a sensible time.
GPU_ONLY_PRESETS = ("sanawm-2.6b",)

LatentSize = tuple[int, int, int]


def latents_for_frames(
    frames: int, height: int, width: int, temporal_stride: int = TEMPORAL_STRIDE, spatial_stride: int = SPATIAL_STRIDE
) -> LatentSize:
    """Latent (T, H, W) of a video of `frames` frames at height x width pixels."""
    if frames < 1 or (frames - 1) % temporal_stride:
        raise UserInputError(
            f"video frame count must be {temporal_stride}k+1 (e.g. 81, 321, 961), got {frames}"
        )
    if height < 1 or width < 1 or height % spatial_stride or width % spatial_stride:
        raise UserInputError(f"video size must be positive multiples of {spatial_stride}, got {height}x{width}")
    return (frames - 1) // temporal_stride + 1, height // spatial_stride, width // spatial_stride


def parse_latent_size(text: str) -> LatentSize:
    """`"11x22x40"` -> (11, 22, 40) (latent frames, height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserInputError(f"latent size must look like 11x22x40 (TxHxW, positive), got {text!r}")
    t, h, w = (int(p) for p in parts)
    return t, h, w


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Give the clip lengths as `latents` (T, H, W) or as video `frames`
    (8k+1 each) at `size` (H, W) pixels; `latents` wins when both are set."""

    preset: str = "sanawm-2.6b"
    """Model preset (`sanawm.model.PRESETS`), built with random weights."""
    frames: tuple[int, ...] = (81, 321, 961)
    """Video frame counts to measure (mapped to latents with the release's VAE strides)."""
    size: tuple[int, int] = (704, 1280)
    """Video height and width in pixels, for `frames`."""
    latents: tuple[LatentSize, ...] = ()
    """Latent sizes (T, H, W) to measure instead of `frames`."""
    mode: str = "forward"
    """"forward" (whole clip at once) or "streaming" (chunk by chunk with the stream cache)."""
    chunk_size: int = 3
    """Latent frames per streaming chunk (the first chunk also holds frame 0)."""
    dtype: str = "bfloat16"
    device: str = "cuda"
    warmup: int = 1
    """Untimed calls before the timed ones (per size; per chunk when streaming)."""
    iters: int = 3
    """Timed calls; the median is reported."""
    text_len: int = 300
    """Text tokens per call (capped at the preset's `max_text_len`)."""
    seed: int = 0
    """Seed of the random inputs."""
    window: int | None = None
    """Streaming: recent chunks of softmax keys / values kept besides the sink (None: all)."""
    sink: int | None = None
    """Streaming with a window: latent frames from the start kept (None: the first chunk)."""
    cuda_graphs: bool = False
    """Streaming: replay each chunk's forward from a CUDA graph (`sanawm.model.graphs`; needs a
    window and CUDA, eager otherwise). Every chunk then gets at least 2 untimed calls: the first
    call of a new shape runs eagerly, the second captures."""
    compile: bool = False
    """Regional torch.compile of the blocks (`sanawm.model.compile.compile_blocks`)."""
    tune: bool = False
    """With `compile`: also tune the fused kernels' launch shapes (`sanawm.model.compile.TUNED_OPTIONS`)."""
    fp8: bool = False
    """FP8 block matmuls (`sanawm.ops.fp8`; CUDA sm89+, bfloat16)."""
    attention: str = "sdpa"
    """Kernel of the softmax blocks' attention (`sanawm.ops.flash`: "sdpa", "flash4" or "fp8")."""

    def __post_init__(self) -> None:
        preset_config(self.preset)  # unknown preset -> UserInputError
        if self.mode not in MODES:
            raise UserInputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.dtype not in DTYPES:
            raise UserInputError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name, low in (("warmup", 0), ("iters", 1), ("chunk_size", 1), ("text_len", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserInputError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("window", "sink"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise UserInputError(f"{name} must be an integer >= 0, got {value!r}")
        if self.cuda_graphs and self.mode != "streaming":
            raise UserInputError("cuda_graphs applies to streaming mode only")
        if not self.latents and not self.frames:
            raise UserInputError("give at least one video frame count or latent size")
        for t, h, w in self.latents:
            if min(t, h, w) < 1:
                raise UserInputError(f"latent sizes must be positive, got {t}x{h}x{w}")
        self.latent_sizes()  # bad frame counts / sizes fail here, not mid-run

    def latent_sizes(self) -> list[LatentSize]:
        """The latent (T, H, W) of every clip to measure, in order."""
        if self.latents:
            return [tuple(s) for s in self.latents]
        return [latents_for_frames(f, *self.size) for f in self.frames]


@dataclass
class ChunkTiming:
    """One streaming chunk: latent frames [start, stop), its forward latency, and the stream
    cache after it was committed (bytes held by GDN blocks, which stays constant, and by the
    softmax blocks' keys / values, which grows with the committed frames)."""

    start: int
    stop: int
    tokens: int
    seconds: float
    commit_seconds: float
    gdn_cache_bytes: int
    kv_cache_bytes: int


@dataclass
class BenchRow:
    """One measured clip. `seconds` is the median time of one forward (streaming: the sum of
    the per-chunk medians); `peak_memory_gb` is None off CUDA."""

    preset: str
    mode: str
    dtype: str
    device: str
    latents: str
    """"TxHxW" latent frames x height x width."""
    latent_frames: int
    latent_height: int
    latent_width: int
    video_frames: int
    tokens: int
    """T * H * W (one token per latent pixel)."""
    seconds: float
    tokens_per_s: float
    peak_memory_gb: float | None
    num_chunks: int | None = None
    first_chunk_seconds: float | None = None
    chunk_seconds_median: float | None = None
    """Median latency over the chunks after the first (None with a single chunk)."""
    gdn_cache_bytes: int | None = None
    kv_cache_bytes: int | None = None
    """Stream cache after the last chunk."""
    chunks: list[ChunkTiming] = field(default_factory=list)


#: Columns of the CSV file: every scalar field of `BenchRow` (per-chunk details are JSON only).
CSV_COLUMNS = [f.name for f in dataclasses.fields(BenchRow) if f.name != "chunks"]


# ----------------------------------------------------------------------------------------
# Model and inputs
# ----------------------------------------------------------------------------------------


def random_model(preset: str, device: torch.device, dtype: torch.dtype) -> SanaWMTransformer:
    """The preset with its from-scratch init, in eval mode, allocated directly on `device`."""
    model = build_preset(preset, device="meta").to_empty(device=device)
    model.init_weights()
    return model.to(dtype).eval()


@torch.no_grad()
def open_every_branch(model: SanaWMTransformer, seed: int = 0) -> SanaWMTransformer:
    """Give the weights that the from-scratch init zeroes, and that shut whole paths off, random
    values (std 0.5 / sqrt(fan-in), from `seed`, the same on every device): the FFN's temporal
    convs, the camera branch's output projections, the output gates' and the GDN gates' weights.
    At zero, a velocity comparison (FP8 vs bf16, a kernel vs its reference) cannot see the error
    of the temporal conv or of the camera branch, which a trained model uses. Changes `model` in
    place and returns it."""
    g = torch.Generator().manual_seed(seed)
    for block in model.blocks:
        attn = block.attn
        for w in (block.mlp.t_conv.weight, attn.out_proj_cam.weight, attn.output_gate.weight, attn.beta_proj.weight,
                  attn.gate_proj.weight):  # fmt: skip
            w.copy_(torch.randn(w.shape, generator=g) * (0.5 / w[0].numel() ** 0.5))
    return model


def camera_inputs(
    batch: int, frames: int, height: int, width: int, device, dtype, generator: torch.Generator | None = None,
    channels: int = 48,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A forward-moving, slowly turning camera: raymap (B, T, 20) and random Plücker rays
    (B, channels, T, H, W) of a realistic scale (48: six per raw frame of a latent frame)."""
    t = torch.arange(frames, dtype=torch.float32)
    yaw = 0.02 * t
    c2w = torch.eye(4).repeat(frames, 1, 1)
    c2w[:, 0, 0], c2w[:, 0, 2], c2w[:, 2, 0], c2w[:, 2, 2] = yaw.cos(), yaw.sin(), -yaw.sin(), yaw.cos()
    c2w[:, 2, 3] = 0.05 * t
    intrinsics = torch.tensor([0.6 * width, 0.6 * width, (width - 1) / 2, (height - 1) / 2]).expand(frames, 4)
    raymap = torch.cat([c2w.flatten(1), intrinsics], dim=1).expand(batch, -1, -1).to(device)
    plucker = 0.1 * torch.randn(batch, channels, frames, height, width, generator=generator)
    return raymap.contiguous(), plucker.to(device=device, dtype=dtype)


def make_inputs(
    model: SanaWMTransformer, size: LatentSize, device, dtype, text_len: int, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Keyword inputs of one forward on a clip of latent `size` (batch 1): random latents and
    text, per-frame timesteps with frame 0 clean, and the camera of `camera_inputs`."""
    frames, height, width = size
    cfg = model.config

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    timestep = 1000 * torch.rand(1, frames, generator=generator)
    timestep[:, 0] = 0
    raymap, plucker = camera_inputs(1, frames, height, width, device, dtype, generator, cfg.plucker_channels)
    return dict(
        latents=randn(1, cfg.in_channels, frames, height, width),
        timestep=timestep.to(device),
        text=randn(1, text_len, cfg.caption_channels),
        text_mask=torch.ones(1, text_len, device=device, dtype=torch.int64),
        raymap=raymap,
        chunk_plucker=plucker,
    )


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 0, iters: int = 1) -> float:
    """Median seconds of `iters` calls of `fn` after `warmup` untimed ones (CUDA events on
    CUDA, so the time is the GPU's, not the launch overhead's)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rel_l2(a: Tensor, b: Tensor) -> float:
    """Relative L2 distance |a - b| / |b|, in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of a and b flattened, in float64."""
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def time_kernel_rows(
    rows: list[tuple[str, Callable[[], object]]],
    device: torch.device,
    moved_bytes: float,
    error: Callable[[str, object], str],
    warmup: int,
    iters: int,
) -> list[tuple[str, float, float, str]]:
    """The kernel micro-benchmarks' rows (scripts/bench_depthwise_glu.py, bench_ucpe.py): each
    (name, fn) run once for `error(name, what fn returned)` (text for the table), then timed
    (`time_call`): (name, ms, GB/s of `moved_bytes` per call, error). A row that raises is
    reported and left out: one failing shape must not lose the other rows."""
    table = []
    for name, fn in rows:
        try:
            err = error(name, fn())
            ms = 1e3 * time_call(fn, device, warmup, iters)
        except Exception as exc:
            print(f"{name}: FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        table.append((name, ms, moved_bytes / ms / 1e6, err))
        print(f"{name}: {ms:.3f} ms", flush=True)
    return table


def rel_l2_column(reference: Tensor, out: Tensor, skip: tuple[str, ...] = ()) -> Callable[[str, object], str]:
    """The `error` of `time_kernel_rows` for rows that compute `reference`: the relative L2 of
    what a row returned, or of `out` for rows that return None (they write into it); "-" for
    the rows named in `skip` (they compute something else)."""

    def error(name: str, result: object) -> str:
        if name in skip:
            return "-"
        return f"{rel_l2(out if result is None else result, reference):.2e}"

    return error


def format_kernel_rows(table: list[tuple[str, float, float, str]], name_width: int) -> str:
    """`time_kernel_rows`' table as text: ms, GB/s and the error column (relative L2)."""
    lines = [f"{'':{name_width}} {'ms':>8} {'GB/s':>7} {'rel L2':>9}"]
    lines += [f"{name:{name_width}} {ms:8.3f} {gbs:7.0f} {err:>9}" for name, ms, gbs, err in table]
    return "\n".join(lines)


def parse_inductor_options(items: list[str]) -> dict | None:
    """KEY=VALUE strings (the scripts' repeatable `--inductor`) as torch.compile options:
    true / false as booleans (inductor checks the types), integers as int, else the string;
    None for no items."""

    def value(text: str):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        return int(text) if text.lstrip("-").isdigit() else text

    if any("=" not in item for item in items):
        raise UserInputError(f"inductor options take KEY=VALUE, got {items}")
    return {key: value(text) for key, text in (item.split("=", 1) for item in items)} or None


def merge_records(path: Path, new: list[dict]) -> list[dict]:
    """The benchmark records stored in `path` (a JSON list; none if it does not exist) with
    `new` added, replacing those of the same (impl, precision, mode, frames): one file such as
    benchmarks/hopper.json collects several scripts' records."""

    def key(r: dict) -> tuple:
        return r.get("impl"), r.get("precision"), r.get("mode"), r.get("frames")

    old = json.loads(path.read_text()) if path.exists() else []
    replaced = {key(r) for r in new}
    return [r for r in old if key(r) not in replaced] + new


def time_forward(model, inputs, device, warmup: int, iters: int) -> tuple[float, float | None]:
    """Median seconds per forward and peak memory in GB (CUDA only, else None)."""
    reset_peak_memory(device)
    with torch.inference_mode():
        seconds = time_call(lambda: model(**inputs), device, warmup, iters)
    return seconds, peak_memory_gb(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    """Most memory allocated on a CUDA device since the last reset, in GB; None elsewhere."""
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def cache_bytes(cache: StreamCache) -> tuple[int, int]:
    """(bytes in GDN blocks' states and key contexts, bytes in softmax blocks' keys / values)."""

    def size(tensors: Sequence[Tensor | None]) -> int:
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    gdn = kv = 0
    for past in cache.blocks:
        if past is None:
            continue
        a = past.attn
        if isinstance(a, GDNPast):
            gdn += size([a.state.kv, a.state.z, a.key_context, a.cam_key_context])
            gdn += size([a.cam_state.kv, a.cam_state.z]) if a.cam_state is not None else 0
        elif isinstance(a, SoftmaxPast):
            kv += size([a.k, a.v, a.cam_k, a.cam_v])
    return gdn, kv


# ----------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------


def resolve_device(config: BenchConfig) -> torch.device:
    """The device to run on; user-facing errors for an unknown / missing device or a preset
    that is too large for the CPU."""
    device = choose_device(config.device)
    if device.type == "cpu" and config.preset in GPU_ONLY_PRESETS:
        raise UserInputError(f"preset {config.preset!r} is too large for the CPU; use --preset tiny (or a GPU)")
    return device


def _row(config: BenchConfig, device: torch.device, size: LatentSize, seconds: float, peak, **extra) -> BenchRow:
    t, h, w = size
    tokens = t * h * w
    return BenchRow(
        preset=config.preset,
        mode=config.mode,
        dtype=config.dtype,
        device=str(device),
        latents=f"{t}x{h}x{w}",
        latent_frames=t,
        latent_height=h,
        latent_width=w,
        video_frames=(t - 1) * TEMPORAL_STRIDE + 1,
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else math.inf,
        peak_memory_gb=peak,
        **extra,
    )


def _stream(model, size: LatentSize, config: BenchConfig, device, dtype, text_len, generator) -> list[ChunkTiming]:
    """Time every chunk's forward (reading the cache), then commit it; as the sampler does.
    Each chunk's random inputs are made when it is reached (the text once)."""
    from sanawm.model.graphs import ChunkGraphs

    T, h, w = size
    sink = config.sink if config.sink is not None else config.chunk_size + 1
    cache = model.new_stream_cache(config.window, sink if config.window is not None else 0)
    graphs = ChunkGraphs(model) if config.cuda_graphs else None
    warmup = max(config.warmup, 2) if graphs is not None and graphs.supported(cache, device) else config.warmup
    text = make_inputs(model, (1, 1, 1), device, dtype, text_len, generator)
    raymap, _ = camera_inputs(1, T, h, w, device, dtype)  # (1, T, 20): small
    chunks = []
    with torch.inference_mode():
        for start, stop in chunk_spans(chunk_starts_for(T, config.chunk_size), T):
            part = make_inputs(model, (stop - start, h, w), device, dtype, text_len, generator)
            part.update(text=text["text"], text_mask=text["text_mask"], raymap=raymap[:, start:stop])
            if start > 0:
                part["timestep"][:, 0] = part["timestep"][:, 1]  # only frame 0 of the clip is clean
            if graphs is not None:
                seconds = time_call(lambda: graphs(cache, **part), device, warmup, config.iters)
            else:
                seconds = time_call(lambda: model(**part, cache=cache), device, warmup, config.iters)
            commit = time_call(lambda: model.commit_to_cache(cache, **part), device, 0, 1)
            gdn, kv = cache_bytes(cache)
            chunks.append(ChunkTiming(start, stop, (stop - start) * h * w, seconds, commit, gdn, kv))
            del part
    return chunks


def _warm_up(model, config: BenchConfig, device: torch.device, dtype: torch.dtype, text_len: int) -> None:
    """Run every clip size `config.warmup` times, untimed, the way it will be timed (streaming:
    chunk by chunk with the cache)."""
    generator = torch.Generator().manual_seed(config.seed + 1)  # the timed inputs stay those of `seed`
    untimed = dataclasses.replace(config, warmup=0, iters=config.warmup)
    for size in config.latent_sizes():
        inputs = make_inputs(model, size, device, dtype, text_len, generator)
        if config.mode == "forward":
            time_forward(model, inputs, device, 0, config.warmup)
        else:
            _stream(model, size, untimed, device, dtype, text_len, generator)
        del inputs


def run_benchmark(
    config: BenchConfig, model: SanaWMTransformer | None = None, on_row: Callable[[BenchRow], None] | None = None
) -> list[BenchRow]:
    """Measure every clip size of `config`; one row per size, in order. `model` (already on
    the device, in the dtype) skips building the preset; `on_row` sees each row as it is done."""
    device = resolve_device(config)
    dtype = getattr(torch, config.dtype)
    if model is None:
        model = random_model(config.preset, device, dtype)
        apply_fast_paths(model, compile=config.compile, fp8=config.fp8, attention=config.attention, tune=config.tune)
    text_len = min(config.text_len, model.config.max_text_len)
    if config.warmup:
        _warm_up(model, config, device, dtype, text_len)
    generator = torch.Generator().manual_seed(config.seed)
    rows = []
    for size in config.latent_sizes():
        if config.mode == "forward":
            inputs = make_inputs(model, size, device, dtype, text_len, generator)
            seconds, peak = time_forward(model, inputs, device, config.warmup, config.iters)
            row = _row(config, device, size, seconds, peak)
            del inputs
        else:
            reset_peak_memory(device)
            chunks = _stream(model, size, config, device, dtype, text_len, generator)
            later = [c.seconds for c in chunks[1:]]
            row = _row(
                config,
                device,
                size,
                sum(c.seconds for c in chunks),
                peak_memory_gb(device),
                num_chunks=len(chunks),
                first_chunk_seconds=chunks[0].seconds,
                chunk_seconds_median=statistics.median(later) if later else None,
                gdn_cache_bytes=chunks[-1].gdn_cache_bytes,
                kv_cache_bytes=chunks[-1].kv_cache_bytes,
                chunks=chunks,
            )
        rows.append(row)
        if on_row is not None:
            on_row(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table_header(mode: str) -> str:
    """Column titles of `format_row` lines for the mode."""
    head = f"{'latents':>12} {'frames':>7} {'tokens':>9} {'s/forward':>10} {'tokens/s':>10} {'peak GB':>8}"
    if mode == "streaming":
        head += f" {'chunks':>6} {'1st chunk s':>11} {'chunk s':>9} {'GDN MB':>8} {'KV MB':>8}"
    return head


def format_row(row: BenchRow) -> str:
    """One table line (see `table_header`)."""
    line = (
        f"{row.latents:>12} {row.video_frames:>7} {row.tokens:>9} {row.seconds:>10.4f} "
        f"{row.tokens_per_s:>10.0f} {_fmt(row.peak_memory_gb, '.2f'):>8}"
    )
    if row.mode == "streaming":
        mb = 1e6
        line += (
            f" {row.num_chunks:>6} {row.first_chunk_seconds:>11.4f} {_fmt(row.chunk_seconds_median, '.4f'):>9}"
            f" {row.gdn_cache_bytes / mb:>8.2f} {row.kv_cache_bytes / mb:>8.2f}"
        )
    return line


def format_table(rows: Sequence[BenchRow]) -> str:
    """The rows as a fixed-width text table (rows of one mode)."""
    if not rows:
        return ""
    return "\n".join([table_header(rows[0].mode), *(format_row(r) for r in rows)])


def write_json(rows: Sequence[BenchRow], path: str | Path, meta: dict | None = None) -> None:
    """`{"meta": {...}, "rows": [...]}`; streaming rows carry their per-chunk list."""
    payload = {"meta": meta or {}, "rows": [dataclasses.asdict(r) for r in rows]}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def write_csv(rows: Sequence[BenchRow], path: str | Path) -> None:
    """One line per row with `CSV_COLUMNS` (empty cells for values that do not apply)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            values = dataclasses.asdict(row)
            writer.writerow({c: "" if values[c] is None else values[c] for c in CSV_COLUMNS})
