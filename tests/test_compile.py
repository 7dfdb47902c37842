"""Regional torch.compile (`sanawm.model.compile`): the compiled blocks compute what the eager
blocks compute, and trace without graph breaks.

CI has no GPU and inductor's CPU code generation is slow, so these tests use dynamo's tracing
backends ("eager": the captured graphs run as they are); inductor on CUDA is compared with
eager by scripts/bench_hopper.py (compiled_vs_eager_rel_l2 in benchmarks/hopper.json).
"""

import copy

import torch
import torch._dynamo

from sanawm.benchmark import make_inputs, random_model
from sanawm.model import build_preset
from sanawm.model.compile import compile_blocks, is_compiled


def tiny():
    torch.manual_seed(0)
    return random_model("tiny", torch.device("cpu"), torch.float32)


def block_inputs(model, inputs, index):
    """The positional / keyword inputs block `index` receives in a forward of `inputs`."""
    seen = {}
    hook = model.blocks[index].register_forward_pre_hook(
        lambda mod, args, kwargs: seen.update(args=args, kwargs=kwargs), with_kwargs=True
    )
    with torch.no_grad():
        model(**inputs)
    hook.remove()
    return seen["args"], seen["kwargs"]


def test_blocks_trace_without_graph_breaks():
    model = tiny()
    inputs = make_inputs(model, (5, 4, 6), "cpu", torch.float32, 12, torch.Generator().manual_seed(0))
    gdn_index = 0
    softmax_index = model.config.softmax_blocks[0]
    for index in (gdn_index, softmax_index):
        args, kwargs = block_inputs(model, inputs, index)
        with torch.no_grad():
            explanation = torch._dynamo.explain(model.blocks[index])(*args, **kwargs)
        assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
        assert explanation.graph_count == 1


def test_compiled_blocks_match_eager():
    torch._dynamo.reset()
    model = tiny()
    compiled = compile_blocks(copy.deepcopy(model), backend="eager")
    assert is_compiled(compiled) and not is_compiled(model)
    with torch.no_grad():
        for frames, chunk_size in [(5, None), (7, 3)]:
            inputs = make_inputs(model, (frames, 4, 6), "cpu", torch.float32, 12, torch.Generator().manual_seed(frames))
            ref = model(**inputs, chunk_size=chunk_size)
            out = compiled(**inputs, chunk_size=chunk_size)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_dynamic_compile_keeps_one_graph_across_frame_counts_without_gdn():
    """With dynamic=True and no GDN block (the CPU GDN path loops over frames in Python), one
    traced set of graphs serves several frame counts: nothing in the block specialises the count."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = build_preset("tiny", device="meta", softmax_blocks=(0, 1, 2, 3)).to_empty(device="cpu")
    eager.init_weights()
    eager.eval()
    compiled = copy.deepcopy(eager)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compile_blocks(compiled, backend=counting_backend, dynamic=True)
    traced = []
    with torch.no_grad():
        for frames in (5, 9, 7):
            inputs = make_inputs(eager, (frames, 4, 6), "cpu", torch.float32, 12, torch.Generator().manual_seed(frames))
            torch.testing.assert_close(compiled(**inputs), eager(**inputs), rtol=1e-5, atol=1e-6)
            traced.append(len(graphs))
    assert traced[0] >= 1 and traced[1:] == [traced[0], traced[0]]  # no new graph for 9 or 7 frames


def test_apply_fast_paths_compiles_and_refuses_fp8_where_it_cannot_run():
    import pytest

    from sanawm.errors import UserInputError
    from sanawm.model.compile import apply_fast_paths, fp8_unsupported
    from sanawm.ops.fp8 import FP8Linear

    model = tiny()
    assert fp8_unsupported("cpu", torch.bfloat16).startswith("--fp8 needs a CUDA GPU")
    with pytest.raises(UserInputError, match="CUDA GPU"):
        apply_fast_paths(model, compile=True, fp8=True)
    assert not is_compiled(model) and not any(isinstance(m, FP8Linear) for m in model.modules())
    with pytest.raises(UserInputError, match="flash4 attention kernel needs a CUDA GPU"):
        apply_fast_paths(model, compile=True, attention="flash4")
    with pytest.raises(UserInputError, match="fp8 attention kernel needs a CUDA GPU"):
        apply_fast_paths(model, compile=True, attention="fp8")
    assert {m.attention_kernel for m in model.modules() if hasattr(m, "attention_kernel")} == {"sdpa"}
    assert apply_fast_paths(model, compile=True) is model and is_compiled(model)


def test_tuned_compile_hands_inductor_the_tuning_option(monkeypatch):
    """`--compile tuned` reaches torch.compile as TUNED_OPTIONS; plain `--compile` passes none."""
    from sanawm.cli import build_parser
    from sanawm.model import compile as compile_module

    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: seen.append(kwargs.get("options")))
    compile_module.apply_fast_paths(tiny(), compile=True, tune=True)
    compile_module.apply_fast_paths(tiny(), compile=True)
    depth = len(tiny().blocks)
    assert seen == [{"coordinate_descent_tuning": True}] * depth + [None] * depth
    parser = build_parser()
    for command in (["generate", "--out", "o.mp4", "--action", "w-4"], ["bench"]):
        assert parser.parse_args([*command, "--compile", "tuned"]).compile == "tuned"
        assert parser.parse_args([*command, "--compile"]).compile == "default"
        assert parser.parse_args(command).compile is None
