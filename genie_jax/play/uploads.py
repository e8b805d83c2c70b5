"""Start images uploaded from the page: decoded safely, re-encoded to the model's frame size, kept briefly.

The byte limit is enforced by the server before anything is decoded (see server.py); here the pixel count is
checked from the image header before the pixels are decoded, so a small file that claims a huge canvas (a
decompression bomb) is refused without allocating it.
"""

from __future__ import annotations

import io
import secrets
import warnings
from collections import OrderedDict

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")  # what the page offers; nothing exotic gets a decoder
DEFAULT_MAX_PIXELS = 25_000_000  # e.g. 5000 x 5000


class UploadError(ValueError):
    """An upload that cannot be used; the text is sent back to the client."""


def decode_upload(data: bytes, height: int, width: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> (height, width, 3) uint8: first frame, RGB, centre-cropped to the model's aspect ratio
    and resized. Raises UploadError naming the problem."""
    if not data:
        raise UploadError("the upload is empty: choose a PNG, JPEG, GIF, WEBP or BMP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                pixels = image.width * image.height  # from the header: nothing decoded yet
                if pixels > max_pixels:
                    raise UploadError(f"image of {image.width}x{image.height} pixels is too large "
                                      f"(limit {max_pixels:,} pixels): scale it down first")
                image.draft("RGB", (width * 4, height * 4))  # JPEG: decode at a reduced size where it can
                rgb = image.convert("RGB")
    except UploadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            ValueError, SyntaxError) as error:  # Pillow raises SyntaxError for some malformed headers
        raise UploadError(f"cannot read the upload as an image ({', '.join(FORMATS)}): {error}") from None
    fitted = ImageOps.fit(rgb, (width, height), Image.Resampling.BILINEAR)
    return np.asarray(fitted, np.uint8)


class UploadStore:
    """Decoded uploads by random token, the oldest dropped beyond ``capacity`` (frames are tiny; this only bounds
    memory against a client that uploads in a loop). Used from the event loop only."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()

    def add(self, image_HWC: np.ndarray) -> str:
        token = secrets.token_urlsafe(16)
        self._images[token] = image_HWC
        while len(self._images) > self.capacity:
            self._images.popitem(last=False)
        return token

    def get(self, token: str) -> np.ndarray:
        try:
            return self._images[token]
        except KeyError:
            raise UploadError("unknown or expired upload: upload the image again") from None
