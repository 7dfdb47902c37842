"""Running a test file's Triton kernels in Triton's CPU interpreter.

The interpreter must be chosen before triton is first imported, so a file's `interpreted_`
tests run in a subprocess of pytest with TRITON_INTERPRET=1 (`rerun_interpreted`); in the
parent they are skipped, and in the subprocess the rest of the file's compiled-kernel tests are.
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
