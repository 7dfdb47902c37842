"""Images crossing the wire: untrusted uploads in (bounded), encoded frames out.

Uploads are checked in the order that keeps a hostile file cheap: the byte size before
decoding base64, the format and the pixel count from the header before any pixel is
decompressed (a few-kB PNG can claim 100k x 100k pixels), then a full decode.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image

from sanawm.errors import UserInputError

UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")
FRAME_FORMATS = {"jpeg": ("JPEG", {"quality": 90}), "webp": ("WEBP", {"quality": 85})}


def decode_base64(text: object, max_bytes: int, what: str = "image") -> bytes:
    """Bytes of a base64 string (a `data:...;base64,` prefix is allowed), at most `max_bytes`."""
    if not isinstance(text, str):
        raise UserInputError(f"{what} must be a base64 string")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (max_bytes + 2) // 3 * 4 + 4:
        raise UserInputError(f"{what} is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UserInputError(f"{what} is not valid base64") from None
    if len(data) > max_bytes:
        raise UserInputError(f"{what} is larger than {max_bytes} bytes")
    return data


def decode_upload(data: bytes, max_pixels: int, what: str = "image") -> Image.Image:
    """An RGB PIL image from PNG/JPEG/WebP bytes with at most `max_pixels` pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as opened:
            width, height = opened.size  # from the header; nothing decompressed yet
            if width * height > max_pixels:
                raise UserInputError(f"{what} has {width}x{height} pixels, more than the limit of {max_pixels}")
            image = opened.convert("RGB")
    except UserInputError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise UserInputError(f"{what} is not a readable PNG, JPEG or WebP image ({err})") from None
    return image


def encode_frame(frame: np.ndarray, fmt: str) -> bytes:
    """One (H, W, 3) uint8 frame as JPEG or WebP bytes."""
    pil_format, options = FRAME_FORMATS[fmt]
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format=pil_format, **options)
    return out.getvalue()
