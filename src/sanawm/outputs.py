"""Checking the files a command will write, before it does any work.

A command that fails after minutes of work because its output cannot be written, or that
silently replaces a file from an earlier run, wastes the user's time or their results. The
`sanawm` commands call `check_outputs` with every file they will write first.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from sanawm.errors import UserInputError


def check_outputs(paths: Iterable[str | os.PathLike], *, overwrite: bool = False) -> list[Path]:
    """Refuse (`UserInputError`) unless every path can be written now.

    Each path must not be a folder, its folder must exist and accept new files, no two paths
    may name the same file, and an existing file is replaced only with ``overwrite``. Writability
    is tested by creating (and removing) a temporary file in the folder: permission bits alone
    do not tell (read-only mounts, /sys, /proc). Returns the paths.
    """
    checked: list[Path] = []
    seen: dict[Path, Path] = {}
    for path in map(Path, paths):
        key = path.resolve()
        if key in seen:
            raise UserInputError(f"two outputs name the same file: {seen[key]} and {path}")
        seen[key] = path
        if path.is_dir():
            raise UserInputError(f"output {path} is a folder")
        folder = path.parent
        if not folder.is_dir():
            raise UserInputError(f"output folder does not exist: {folder}")
        if path.exists() and not overwrite:
            raise UserInputError(f"{path} already exists; pass --overwrite to replace it")
        _check_writable(path)
        checked.append(path)
    return checked


def _check_writable(path: Path) -> None:
    try:
        if path.exists():
            if not os.access(path, os.W_OK):
                raise PermissionError("permission denied")
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserInputError(f"cannot write {path}: {reason.lower()}") from None
