"""Reading the JSON files users point us at (model folders, configs), with user-facing errors."""

from __future__ import annotations

import json
from pathlib import Path

from sanawm.errors import UserInputError


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in `path`; a missing file, bad JSON or a non-object is a `UserInputError`
    that names `what` the file was supposed to be."""
    if not path.is_file():
        raise UserInputError(f"{what} not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise UserInputError(f"{path}: expected a JSON object")
    return doc
