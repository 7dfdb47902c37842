"""Checking Triton kernels without a GPU: in Triton's CPU interpreter, and built for sm90.

The interpreter must be chosen before triton is first imported, so a file's `interpreted_`
tests run in a subprocess of pytest with TRITON_INTERPRET=1 (`rerun_interpreted`); in the
parent they are skipped, and in the subprocess the rest of the file's compiled-kernel tests are.
`build_for_sm90` compiles a kernel ahead of time for an H100 / H200 with Triton's own ptxas.
"""

from __future__ import annotations

import os
import subprocess
import sys

try:
    import triton  # noqa: F401

    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def rerun_interpreted(test_file: str) -> None:
    """Run `test_file`'s tests whose names contain "interpreted_" under TRITON_INTERPRET=1 and
    fail unless they ran and passed (none skipped)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, "-k", "interpreted_"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


def build_for_sm90(kernel, pointers: dict[str, str], constexprs: dict, num_warps: int, aligned=()):
    """Ahead-of-time build of the Triton `kernel` for an H100 / H200 with Triton's own ptxas (no
    GPU): the arguments named in `pointers` typed as given ("*bf16", ...), `constexprs` fixed,
    every other argument i32; the pointers and the `aligned` arguments marked 16-byte divisible.
    Returns the compiled kernel; skips the calling test where this triton install has no ptxas."""
    import inspect

    import pytest
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(kernel.fn).parameters)
    signature = {n: pointers.get(n, "constexpr" if n in constexprs else "i32") for n in names}
    source = ASTSource(
        kernel, signature, constexprs={(names.index(n),): v for n, v in constexprs.items()},
        attrs={(names.index(n),): [["tt.divisibility", 16]] for n in [*pointers, *aligned]},
    )  # fmt: skip
    try:
        return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    except RuntimeError as err:
        if "ptxas" in str(err):
            pytest.skip(str(err))
        raise
